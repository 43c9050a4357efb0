"""Shared fixtures. Keep each fixture small and documented; helpers live in their own modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import RunningOperator, make_kit, running_operator
from postgres import PostgresCluster, fresh_database, postgres_cluster

pytest_plugins = ["browser"]  # headless Chromium fixtures (chromium, new_page, browser_page, phone_page, browser_pki)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the whole run (skipped outside CI if not installed)."""
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_url(pg_cluster: PostgresCluster) -> str:
    """SQLAlchemy URL of an empty database on the test cluster, shared by the session."""
    return pg_cluster.create_database("mssante_test")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store database URL on each engine; a fresh, empty database per test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    with fresh_database(request.getfixturevalue("pg_cluster")) as url:
        yield url


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningOperator]:
    """One operator on a fresh demo kit for the whole module (a module may define its own)."""
    home = tmp_path_factory.mktemp("kit") / "home"
    manifest = make_kit(home)
    with running_operator(home, manifest) as operator:
        yield operator
