"""Freed memory goes back to the system (mssante_base/memory.py)."""

from __future__ import annotations

import asyncio

import pytest

from mssante_base import memory


def test_the_trimmer_calls_malloc_trim_until_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    done = asyncio.Event()

    def trim(pad: int) -> int:
        calls.append(pad)
        if len(calls) == 3:
            done.set()
        return 1

    monkeypatch.setattr(memory, "_malloc_trim", lambda: trim)

    async def scenario() -> None:
        task = asyncio.create_task(memory.trim_periodically(0.001))
        await asyncio.wait_for(done.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert calls[:3] == [0, 0, 0]


def test_glibc_s_malloc_trim_is_found_and_runs() -> None:
    trim = memory._malloc_trim()
    assert trim is not None  # Debian's glibc
    assert trim(0) in (0, 1)
