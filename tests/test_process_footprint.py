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
from mssante_operator.workers import MALLOC_ENVIRONMENT, child_environment, use_malloc_settings

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


def test_the_supervisor_gives_its_malloc_settings_to_mes_bridge_and_forks_the_workers_sharing_its_pages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mes_bridge gets workers.MALLOC_ENVIRONMENT (glibc reads it at exec); the workers are forked from the
    supervisor (its command line, no exec) after it applied the threshold and loaded the application, so
    a large part of each worker's memory is the supervisor's pages, shared."""
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    manifest = make_kit(tmp_path)  # two workers and mes_bridge
    with serve_process(tmp_path, manifest) as process:
        wait_for_log(tmp_path / "serve.log", f"operator {manifest['operator']['domain']} ready", count=2)
        supervisor = psutil.Process(process.pid)
        children = supervisor.children()
        bridges = [child for child in children if "mes_bridge" in child.cmdline()]
        workers = [child for child in children if child not in bridges]
        assert len(bridges) == 1 and len(workers) == 2
        assert bridges[0].environ()["MALLOC_MMAP_THRESHOLD_"] == MALLOC_ENVIRONMENT["MALLOC_MMAP_THRESHOLD_"]
        for worker in workers:
            assert worker.cmdline() == supervisor.cmdline()  # forked, not exec'd
            memory = worker.memory_full_info()
            assert memory.rss - memory.uss > 20 * 2**20  # the application's pages, the supervisor's


def test_the_malloc_threshold_is_applied_to_the_supervisor_itself() -> None:
    assert use_malloc_settings()  # Debian's glibc: forked workers inherit it


def _maps(process: psutil.Process, fragment: str) -> bool:
    """Whether ``process`` has a file whose path holds ``fragment`` mapped (an imported C extension)."""
    return any(fragment in mapped.path for mapped in process.memory_maps())


def test_only_the_first_worker_serves_autoconfig_and_loads_aiohttp(tmp_path: Path) -> None:
    """aiohttp's server (~7 MB) in one worker, not in each: Thunderbird asks for its setup once."""
    manifest = make_kit(tmp_path)  # two workers, an autoconfig listener
    with serve_process(tmp_path, manifest) as process:
        workers = [child for child in psutil.Process(process.pid).children() if "mes_bridge" not in child.cmdline()]
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
