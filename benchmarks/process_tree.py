"""The server's process tree as the benchmarks measure it: RSS (sampled peak), PSS, CPU time."""

from __future__ import annotations

import contextlib
import threading
import time

import psutil


class ServerMemory:
    """Samples the resident memory of the server's process tree every 50 ms; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def tree(self) -> list[psutil.Process]:
        try:
            return [self.process, *self.process.children(recursive=True)]
        except psutil.Error:
            return [self.process]

    def rss(self) -> int:
        total = 0
        for proc in self.tree():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def pss(self) -> int:
        """Proportional set size: shared pages (code, the supervisor's) counted once across the tree."""
        total = 0
        for proc in self.tree():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_full_info().pss
        return total

    def per_process(self) -> list[int]:
        values = []
        for proc in self.tree():
            with contextlib.suppress(psutil.Error):
                values.append(proc.memory_info().rss)
        return values

    def reset_peak(self) -> None:
        self.peak = self.rss()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        user, system = self.cpu_split()
        return user + system

    def cpu_split(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the whole tree so far, processes that ended included: a process's
        time moves to its parent's children_* times when the parent reaps it (Dovecot's imap and login
        processes end with their connection)."""
        user = system = 0.0
        for proc in self.tree():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                user += times.user + times.children_user
                system += times.system + times.children_system
        return user, system

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
