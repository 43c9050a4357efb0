"""A throwaway PostgreSQL cluster for tests, built from the distribution's server binaries.

Tests that need PostgreSQL are skipped when the binaries are missing, except in CI (env CI=true),
where that is an error: CI must exercise both engines.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

SUPERUSER = "postgres"
# Test cluster only: durability is irrelevant, start-up and schema creation speed is not.
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def find_bindir() -> Path | None:
    """Directory of the newest installed server binaries (Debian: /usr/lib/postgresql/<v>/bin)."""
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    env_bindir = os.environ.get("PG_BINDIR")
    if env_bindir:
        candidates.insert(0, str(Path(env_bindir) / "initdb"))
    usable = [Path(c).parent for c in candidates if os.access(c, os.X_OK)]
    return max(usable, key=_version_key) if usable else None


def _version_key(bindir: Path) -> tuple[int, ...]:
    digits = [int(part) for part in bindir.parent.name.split(".") if part.isdigit()]
    return tuple(digits) or (0,)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresCluster:
    """A running cluster in a temporary directory; `url(db)` gives SQLAlchemy URLs."""

    def __init__(self, bindir: Path, workdir: Path) -> None:
        self.bindir = bindir
        self.workdir = workdir
        self.datadir = workdir / "data"
        self.port = free_port()

    def _run(self, *args: str) -> None:
        """Run a server binary, as the postgres user when we are root (the binaries refuse root)."""
        prefix = ["runuser", "-u", SUPERUSER, "--"] if os.geteuid() == 0 else []
        result = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr.strip()}")

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.workdir, user=SUPERUSER)
        self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.datadir),
            "-U", SUPERUSER,
            "-A", "trust",
            "-E", "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )  # fmt: skip
        options = " ".join(
            [f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.workdir}"]
            + [f"-c {setting}" for setting in FAST_SETTINGS]
        )
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.workdir / "server.log"),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop")

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _admin(self, statement: str) -> None:
        with psycopg.connect(self.url(driver="postgresql"), autocommit=True) as conn:
            conn.execute(statement)

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        name = name or f"test_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """Start a cluster (or skip the test, outside CI, if PostgreSQL is not installed); always clean up."""
    bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin or PG_BINDIR)"
        if in_ci():
            pytest.fail(f"CI must test PostgreSQL: {message}")
        pytest.skip(message)
    workdir = Path(tempfile.mkdtemp(prefix="mssante-pg-"))
    cluster = PostgresCluster(bindir, workdir)
    try:
        cluster.start()
        yield cluster
    finally:
        try:
            if (cluster.datadir / "postmaster.pid").exists():
                cluster.stop()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def fresh_database(cluster: PostgresCluster) -> Iterator[str]:
    """A database of its own for one test, dropped afterwards."""
    url = cluster.create_database()
    try:
        yield url
    finally:
        cluster.drop_database(url.rsplit("/", 1)[1])
