"""Alembic environment of mes_bridge's store, driven only by ``StoreCore.migrate()``.

The store hands over an open connection (inside its transaction; on PostgreSQL holding an advisory
lock) through ``config.attributes["connection"]``: no alembic.ini, no engine built here.
"""

from alembic import context

from mes_bridge.store.schema import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    version_table="alembic_version",
)
with context.begin_transaction():
    context.run_migrations()
