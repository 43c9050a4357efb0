"""Shared fixtures. Keep each fixture small and documented; helpers live in the tests/support package."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from support.harness import RunningOperator, make_kit, running_operator
from support.postgres import PostgresCluster, fresh_database, postgres_cluster

# Property tests (tests/test_properties_*.py) are reproducible in the suite: the same examples on every run,
# no example database written, no per-example deadline on a busy machine; each test bounds max_examples.
# HYPOTHESIS_PROFILE=explore draws new examples on every run, for a longer hunt by hand.
settings.register_profile("suite", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", database=None, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))

# Headless Chromium fixtures (chromium, new_page, browser_page, phone_page, browser_pki).
pytest_plugins = ["support.browser"]

# Tests are marked `integration` when they start a server or a subprocess (operator, bridge, web space,
# PostgreSQL, slapd, Postfix, Chromium, a CLI child), `unit` otherwise; `pytest -m unit` is the fast subset.
# A test is integration when a fixture it uses (directly or not) is one of these ...
SERVER_FIXTURES = frozenset({
    "running", "shared", "stored_kit", "bridge", "served", "story", "space", "seeded",  # operator, bridge, web
    "pg_cluster", "postgres_url", "slapd_server",  # PostgreSQL and OpenLDAP servers
    "chromium", "new_page", "browser_page", "phone_page",  # headless Chromium
})
# ... or a parametrised fixture takes one of these server-backed values ...
SERVER_PARAMS = frozenset({("store_url", "postgresql"), ("directory", "ldap")})
# ... or its module starts servers or subprocesses inside its tests (PeerOperator, PostfixPeer, serve_process,
# running_operator, fake_submission, `python -m ...` children, a full demo kit per test) ...
INTEGRATION_MODULES = frozenset({
    "test_annuaire_backends", "test_annuaire_ldap", "test_bridge_cli", "test_bridge_intake", "test_bridge_lmtp",
    "test_bridge_outgoing", "test_bridge_registry", "test_browser_harness", "test_browser_patient_story",
    "test_bulk_cli", "test_bulk_e2e", "test_bulk_sender", "test_cli", "test_demo_patient", "test_durability",
    "test_imap_clients", "test_imap_compliance", "test_imap_limits", "test_imap_mbsync", "test_imap_server",
    "test_imap_shutdown", "test_imap_stress", "test_ingress_smoke", "test_listening", "test_mta", "test_outbound",
    "test_outbound_crash", "test_outbound_e2e", "test_patient_flow", "test_postfix_peer", "test_process_footprint",
    "test_readme_walkthrough",
    "test_smtp_abuse", "test_submission", "test_unsigned_reports", "test_web_auth", "test_web_documents",
    "test_web_history", "test_web_messages", "test_web_security",
    "test_check", "test_trust_downloads",
})
# ... or it is one of these tests (module::function) that start a child or a server in a module of unit tests.
INTEGRATION_TESTS = frozenset({
    "test_auth_tokens::test_jwks_over_loopback_http",
    "test_store::test_several_processes_share_one_store",
    "test_schema::test_schema_file_passes_slaptest",
    "test_imap_vs_dovecot::test_quick_run_against_both_servers",  # the operator and Dovecot, side by side
})


def is_integration(item: pytest.Item) -> bool:
    """Whether a collected test starts a server or a subprocess (see the sets above)."""
    module = item.module.__name__ if isinstance(item, pytest.Function) and item.module else ""
    name = getattr(item, "originalname", item.name)
    callspec = getattr(item, "callspec", None)
    params = callspec.params.items() if callspec else ()
    return (module in INTEGRATION_MODULES or f"{module}::{name}" in INTEGRATION_TESTS
            or not SERVER_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))
            or any(isinstance(value, str) and (key, value) in SERVER_PARAMS for key, value in params))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test `unit` or `integration`, so `pytest -m unit` runs only the fast ones."""
    for item in items:
        item.add_marker(pytest.mark.integration if is_integration(item) else pytest.mark.unit)


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
