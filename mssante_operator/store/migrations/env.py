"""Alembic environment, driven only by `Store.migrate()`.

The store hands over an open connection (already inside its transaction and, on PostgreSQL, holding
an advisory lock) through `config.attributes["connection"]`; no alembic.ini, no engine built here.
"""

from alembic import context

from mssante_operator.store.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
