"""What each process imports: every module costs resident memory in every worker (and the supervisor) for good."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from support.harness import make_kit, serve_process, wait_for_log

from mssante_base.storage.engines import SQLITE_CACHE_KIB, open_engines
from mssante_operator.workers import MALLOC_ENVIRONMENT, child_environment

HEAVY = ("alembic", "psycopg", "jwt", "ldap3")

_PROBE = """
import json, sys
from pathlib import Path
{imports}
print(json.dumps(sorted(sys.modules)))
"""


def _modules(imports: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``imports``, and their top-level packages."""
    result = subprocess.run([sys.executable, "-c", _PROBE.format(imports=imports)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    names = set(json.loads(result.stdout))
    return names | {name.partition(".")[0] for name in names}


def test_the_supervisor_path_does_not_import_the_application(tmp_path: Path) -> None:
    make_kit(tmp_path)
    loaded = _modules("import mssante_operator.cli, mssante_operator.cli_common, mssante_operator.workers\n"
                      "from mssante_operator.listening import bind_listeners\n"
                      f"settings = mssante_operator.cli_common.settings_of(Path({str(tmp_path)!r}))\n"
                      "[sock.close() for sock in bind_listeners(settings).values()]")
    assert not loaded & {"mssante_operator.app", "sqlalchemy", "cryptography", "aiosmtpd", "dkim", *HEAVY}


def test_a_worker_loads_only_what_its_configuration_uses(tmp_path: Path) -> None:
    """SQLite and the file annuaire, no bearer tokens: no PostgreSQL driver, LDAP, PyJWT, nor alembic."""
    make_kit(tmp_path)
    loaded = _modules("from mssante_operator.app import Operator\n"
                      "from mssante_operator.config import load_settings\n"
                      f"Operator(load_settings(Path({str(tmp_path)!r}))).store.close()")
    assert "sqlalchemy" in loaded
    assert not loaded & set(HEAVY)


def test_the_children_get_a_fixed_mmap_threshold_unless_the_environment_sets_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert child_environment({"X": "1"})["MALLOC_MMAP_THRESHOLD_"] == MALLOC_ENVIRONMENT["MALLOC_MMAP_THRESHOLD_"]
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "4194304")
    assert child_environment()["MALLOC_MMAP_THRESHOLD_"] == "4194304"


def test_the_supervisor_gives_its_malloc_settings_to_the_workers_and_mes_bridge(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers and mes_bridge get workers.MALLOC_ENVIRONMENT (glibc reads it at exec)."""
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    manifest = make_kit(tmp_path)  # two workers and mes_bridge
    with serve_process(tmp_path, manifest) as process:
        children = psutil.Process(process.pid).children()
        environments = {" ".join(child.cmdline()[2:3]): child.environ() for child in children}
    assert set(environments) == {"mes_bridge", "mssante_operator.cli"} and len(children) == 3
    for environment in environments.values():
        assert environment["MALLOC_MMAP_THRESHOLD_"] == MALLOC_ENVIRONMENT["MALLOC_MMAP_THRESHOLD_"]


def _maps(process: psutil.Process, fragment: str) -> bool:
    """Whether ``process`` has a file whose path holds ``fragment`` mapped (an imported C extension)."""
    return any(fragment in mapped.path for mapped in process.memory_maps())


def test_only_the_first_worker_serves_autoconfig_and_loads_aiohttp(tmp_path: Path) -> None:
    """aiohttp's server (~7 MB) in one worker, not in each: Thunderbird asks for its setup once."""
    manifest = make_kit(tmp_path)  # two workers, an autoconfig listener
    with serve_process(tmp_path, manifest) as process:
        workers = [child for child in psutil.Process(process.pid).children() if "--worker" in child.cmdline()]
        wait_for_log(tmp_path / "serve.log", f"operator {manifest['operator']['domain']} ready", count=2)
        assert len(workers) == 2
        assert sorted(_maps(worker, "aiohttp/_http_parser") for worker in workers) == [False, True]


def test_each_sqlite_connection_keeps_a_small_page_cache(tmp_path: Path) -> None:
    """Every pooled connection of every process has its own page cache: 256 KiB each, not SQLite's 2 MB."""
    engines = open_engines(f"sqlite:///{tmp_path / 'store.db'}")
    with engines.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA cache_size").scalar() == -SQLITE_CACHE_KIB
    assert SQLITE_CACHE_KIB <= 256
    engines.engine.dispose()
