"""Several worker processes behind one set of ports, to use every core.

Python runs one thread of Python at a time; TLS, DKIM and MIME work for a busy MTA need more than one
core. The supervisor has a short-lived ``serve --prepare`` child check the start-up files and migrate
the store once, binds every listening port (so the ports accept connections, queued by the kernel,
from the moment it starts), then starts N copies of ``serve --worker`` that inherit those sockets and
share the accepting (see ``listening``). It forwards SIGTERM/SIGINT (clean stop) and SIGHUP (reload),
and restarts a worker or a companion (mes_bridge) that dies: ``serve`` runs it, whatever the worker
count, whenever a companion is configured. Workers are tied to the supervisor's life (PR_SET_PDEATHSIG): if the
supervisor is killed, they are killed too.

With [metrics], the supervisor also binds the metrics port (the workers share it and each answers for all)
and gives every child a fresh private directory for prometheus_client's multiprocess mode (see
``metrics``); it forgets a dead worker's live gauges (``mark_process_dead``).

Workers are forked from the supervisor, which loads the application (SQLAlchemy, cryptography, aiosmtpd,
the IMAP server) once, after the store is migrated and the ports bound, just before the first fork: the
~50 MB of imported code and data are then shared copy-on-write by every worker instead of loaded by
each (``gc.freeze`` keeps the collector from writing to them), which took ~30 MB off a two-worker
tree (docs/benchmarks.md, Memory). The supervisor never runs any of it: it binds, forks, waits and
forwards signals; a worker starts exactly as ``serve --worker`` would (same command-line entry).
mes_bridge, a separate program, is still started by exec. Until the first fork, this module and what
it imports stay light (tests/test_process_footprint.py): a failed start costs no import.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, Protocol

import click

from mssante_base.listening import WorkerLoad

from .listening import METRICS_LISTENER, export_listeners

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
METRICS_DIRECTORY = ".metrics"  # in HOME: the children's metric files, emptied at each start
MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's (metrics.py, not imported here)
# glibc malloc settings for the children (workers, mes_bridge), read by each at exec; a value already in the
# environment wins. A LOGIN's argon2 hash takes 19 MiB: with glibc's default, a freed block that large raises
# the mmap threshold to its size, so later hashes come from the heap and stay resident once freed (tens of
# MB per worker after a burst of logins). A fixed threshold keeps every block of 1 MiB and more in its own
# mapping, returned on free. (MALLOC_ARENA_MAX=2 made no measurable difference once this is set.) Measured
# with 1,000 IDLE TLS clients: docs/benchmarks.md, Memory.
MALLOC_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": str(1024 * 1024)}
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def use_malloc_settings() -> bool:
    """Apply MALLOC_ENVIRONMENT's mmap threshold (or the environment's) to this process, which forked workers
    inherit (glibc read the environment at exec, before any of it was set); True when glibc took it."""
    value = child_environment()["MALLOC_MMAP_THRESHOLD_"]
    try:
        return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, int(value)))
    except (OSError, AttributeError, ValueError):  # not glibc
        return False


def _die_with_parent() -> None:
    """In the child, before exec: receive SIGKILL when the supervisor dies (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: workers then outlive a killed supervisor
        pass


def _serve_args(home: Path, log_level: str, flag: str) -> list[str]:
    """The command line of ``serve`` after the program: for a forked worker's entry, or behind _serve_argv."""
    return ["--log-level", log_level, "serve", "--home", str(home), flag]


def _serve_argv(home: Path, log_level: str, flag: str) -> list[str]:
    return [sys.executable, "-m", "mssante_operator.cli", *_serve_args(home, log_level, flag)]


def prepare_in_child(home: Path, log_level: str) -> int:
    """Check the start-up files and migrate the store in a child process; its exit status (0: ready).

    The child loads the whole application and exits, so the supervisor stays small; it reports a
    failure on the shared stderr, as the supervisor used to.
    """
    process = subprocess.Popen(_serve_argv(home, log_level, "--prepare"), preexec_fn=_die_with_parent)
    status = process.wait()
    return status if status >= 0 else 128 - status  # killed by a signal: as a shell reports it


def bridge_argv(home: Path) -> list[str]:
    """mes_bridge, a separate service that ``serve`` runs beside the operator when HOME configures [bridge]."""
    return [sys.executable, "-m", "mes_bridge", "serve", "--home", str(home)]


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment for a worker or companion: MALLOC_ENVIRONMENT unless set, then ``extra``."""
    return {**MALLOC_ENVIRONMENT, **os.environ, **(extra or {})}


def start_companion(argv: list[str]) -> subprocess.Popen[bytes]:
    """A companion service (mes_bridge) tied to our life like the workers."""
    process = subprocess.Popen(argv, preexec_fn=_die_with_parent, env=child_environment())
    log.info("%s started (pid %d)", argv[2], process.pid)
    return process


class Child(Protocol):
    """A child process as the supervisor watches it: a companion's Popen or a :class:`ForkedWorker`."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...


class ForkedWorker:
    """A worker forked from the supervisor, watched as a Popen is (poll, wait, signals)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0)
            time.sleep(0.05)
        return code

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _load_application() -> None:
    """Import what a worker runs, in the supervisor, for the forked workers to share (see the module's
    docstring); then freeze it out of the garbage collector's reach (its passes would write to every
    object, copying the shared pages into each worker)."""
    import gc

    from . import app, cli  # noqa: F401  (the worker's entry and everything it imports)

    gc.collect()
    gc.freeze()


def _run_forked_worker(argv: list[str], environment: dict[str, str]) -> NoReturn:
    """In the forked child: become ``serve --worker`` (``argv``), and never return to the supervisor's code."""
    code = 1
    try:
        _die_with_parent()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)  # the worker's event loop installs its own
        os.environ.update(environment)
        from .cli import main

        try:
            main.main(args=argv, prog_name="mssante-operator", standalone_mode=False)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except click.ClickException as exc:
            exc.show()
            code = exc.exit_code
    except BaseException:
        log.exception("worker %d failed", os.getpid())
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def stop_processes(processes: Sequence[Child], grace: float = 30.0) -> int:
    """SIGTERM each, wait up to ``grace`` seconds in all, kill the late; the first non-zero status."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    status = 0
    for process in processes:
        try:
            code = process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("process %d did not stop in %.0f s; killing it", process.pid, grace)
            process.kill()
            code = process.wait()
        status = status or (code if code > 0 else 0)
    return status


class Supervisor:
    """Starts, watches and stops the worker processes of one HOME (and its companion services)."""

    def __init__(self, home: Path, count: int, log_level: str, sockets: dict[str, socket.socket],
                 companions: list[list[str]] | None = None) -> None:
        self.home = home
        self.count = count
        self.log_level = log_level
        self.sockets = sockets
        self.load = WorkerLoad.create(count)
        self.companion_argvs = companions or []
        self.companions: list[subprocess.Popen[bytes]] = []
        self.workers: list[Child] = []
        self._loaded = False
        self._stopping = False
        self._reload = False
        self.metrics_dir = home / METRICS_DIRECTORY if METRICS_LISTENER in sockets else None

    def _prepare_metrics(self) -> None:
        """An empty private directory for the children's metric files (a previous run's counters would add up)."""
        if self.metrics_dir is None:
            return
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.metrics_dir.mkdir(mode=0o700)
        os.environ[MULTIPROC_VARIABLE] = str(self.metrics_dir)  # inherited by every child from now on

    def _forget(self, pid: int) -> None:
        """A dead child's live gauges (IMAP sessions) must not count any more; its counters stay in the sums."""
        if self.metrics_dir is not None:
            from prometheus_client import multiprocess  # only now: the supervisor stays light

            multiprocess.mark_process_dead(pid, str(self.metrics_dir))

    def _spawn(self, slot: int) -> Child:
        """Fork the worker of ``slot``: it inherits the listening sockets and its load slot."""
        environment, _ = export_listeners(self.sockets)
        load_environment, _ = self.load.handover(slot)
        if not self._loaded:
            use_malloc_settings()
            _load_application()
            self._loaded = True
        argv = _serve_args(self.home, self.log_level, "--worker")
        sys.stdout.flush()  # or the child would write what the supervisor had buffered a second time
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _run_forked_worker(argv, {**environment, **load_environment})
        log.info("worker %d started", pid)
        return ForkedWorker(pid)

    def _on_stop(self, signum: int, _frame: object) -> None:
        self._stopping = True

    def _on_hup(self, signum: int, _frame: object) -> None:
        self._reload = True

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit status."""
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        self._prepare_metrics()
        self.companions = [start_companion(argv) for argv in self.companion_argvs]
        self.workers = [self._spawn(slot) for slot in range(self.count)]
        while not self._stopping:
            if self._reload:
                self._reload = False
                for process in (*self.workers, *self.companions):  # mes_bridge re-reads its CRLs too
                    process.send_signal(signal.SIGHUP)
            for index, worker in enumerate(self.workers):
                if worker.poll() is not None and not self._stopping:
                    log.error("worker %d exited with %s; restarting it", worker.pid, worker.returncode)
                    self._forget(worker.pid)
                    time.sleep(1)
                    self.workers[index] = self._spawn(index)
            for index, companion in enumerate(self.companions):
                if companion.poll() is not None and not self._stopping:
                    argv = self.companion_argvs[index]
                    log.error("%s (pid %d) exited with %s; restarting it", argv[2], companion.pid,
                              companion.returncode)
                    self._forget(companion.pid)
                    time.sleep(1)
                    self.companions[index] = start_companion(argv)
            time.sleep(0.2)
        for sock in self.sockets.values():
            sock.close()  # no new connections while the workers finish theirs
        return self._stop_workers()

    def _stop_workers(self, grace: float = 30.0) -> int:
        status = stop_processes(self.workers, grace)
        status = stop_processes(self.companions, grace) or status
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        log.info("operator stopped")
        return status
