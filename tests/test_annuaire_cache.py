"""The annuaire cache: TTL, negative caching, bounded size, invalidation by import, errors never cached."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mssante_base.annuaire import Annuaire, AnnuaireUnavailable, BalKind, MailboxEntry
from mssante_base.annuaire.cache import STAMP_CHECK_INTERVAL, CachedAnnuaire, touch_stamp

DOCTOR = MailboxEntry("dr.martin@hopital.mssante.fr", BalKind.PER, rpps="810001234567")
SERVICE = MailboxEntry("cardio@hopital.mssante.fr", BalKind.ORG, delegates=("dr.martin@hopital.mssante.fr",))


class CountingAnnuaire(Annuaire):
    """Answers from a dict and counts the questions; ``down`` makes it fail like an unreachable directory."""

    def __init__(self) -> None:
        self.entries = {e.address: e for e in (DOCTOR, SERVICE)}
        self.calls = 0
        self.down = False
        self.delay = 0.0

    async def _answer(self) -> None:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise AnnuaireUnavailable("directory down")

    async def lookup(self, address: str) -> MailboxEntry | None:
        await self._answer()
        return self.entries.get(address)

    async def search(self, text: str, limit: int = 50) -> list[MailboxEntry]:
        await self._answer()
        return [e for e in self.entries.values() if text in e.address]

    async def by_rpps(self, rpps: str) -> list[MailboxEntry]:
        await self._answer()
        return [e for e in self.entries.values() if e.rpps == rpps]

    async def by_structure(self, structure_id: str) -> list[MailboxEntry]:
        await self._answer()
        return [e for e in self.entries.values() if e.structure_id == structure_id]

    async def delegated_to(self, address: str) -> list[MailboxEntry]:
        await self._answer()
        return [e for e in self.entries.values() if address in e.delegates]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path | None = None, **options: object) -> tuple[CachedAnnuaire, CountingAnnuaire, Clock]:
    inner, clock = CountingAnnuaire(), Clock()
    stamp = tmp_path / "annuaire.stamp" if tmp_path else None
    return CachedAnnuaire(inner, clock=clock, stamp=stamp, **options), inner, clock  # type: ignore[arg-type]


def test_a_found_entry_is_served_from_the_cache_until_its_ttl() -> None:
    async def scenario() -> None:
        cache, inner, clock = make(ttl=300, negative_ttl=60)
        assert await cache.lookup("DR.MARTIN@hopital.mssante.fr ") == DOCTOR
        assert await cache.lookup("dr.martin@hopital.mssante.fr") == DOCTOR
        assert inner.calls == 1
        clock.now += 299
        await cache.lookup("dr.martin@hopital.mssante.fr")
        assert inner.calls == 1
        clock.now += 2
        await cache.lookup("dr.martin@hopital.mssante.fr")
        assert inner.calls == 2

    asyncio.run(scenario())


def test_an_unknown_address_is_cached_for_the_shorter_negative_ttl() -> None:
    async def scenario() -> None:
        cache, inner, clock = make(ttl=300, negative_ttl=60)
        assert await cache.lookup("nobody@hopital.mssante.fr") is None
        assert await cache.lookup("nobody@hopital.mssante.fr") is None
        assert inner.calls == 1
        inner.entries["nobody@hopital.mssante.fr"] = MailboxEntry("nobody@hopital.mssante.fr", BalKind.PER)
        clock.now += 61
        assert await cache.lookup("nobody@hopital.mssante.fr") is not None
        assert inner.calls == 2

    asyncio.run(scenario())


def test_rpps_and_delegate_questions_are_cached_too() -> None:
    async def scenario() -> None:
        cache, inner, _ = make()
        assert await cache.by_rpps("810001234567") == [DOCTOR]
        assert await cache.delegated_to("dr.martin@hopital.mssante.fr") == [SERVICE]
        assert await cache.by_rpps("810001234567") == [DOCTOR]
        assert await cache.delegated_to("DR.MARTIN@hopital.mssante.fr") == [SERVICE]
        assert inner.calls == 2

    asyncio.run(scenario())


def test_the_cache_is_bounded() -> None:
    async def scenario() -> None:
        cache, inner, _ = make(size=8)
        for n in range(100):
            await cache.lookup(f"user{n}@hopital.mssante.fr")
        calls = inner.calls
        await cache.lookup("user0@hopital.mssante.fr")  # long evicted
        assert inner.calls == calls + 1
        assert len(cache._found) + len(cache._missing) <= 8 + 2

    asyncio.run(scenario())


def test_failures_are_not_cached() -> None:
    async def scenario() -> None:
        cache, inner, _ = make()
        inner.down = True
        with pytest.raises(AnnuaireUnavailable):
            await cache.lookup("dr.martin@hopital.mssante.fr")
        inner.down = False
        assert await cache.lookup("dr.martin@hopital.mssante.fr") == DOCTOR

    asyncio.run(scenario())


def test_an_import_stamp_empties_the_cache(tmp_path: Path) -> None:
    async def scenario() -> None:
        cache, inner, clock = make(tmp_path)
        await cache.lookup("dr.martin@hopital.mssante.fr")
        touch_stamp(tmp_path / "annuaire.stamp")
        os.utime(tmp_path / "annuaire.stamp", ns=(1, 1))  # a distinct mtime even on coarse clocks
        await cache.lookup("dr.martin@hopital.mssante.fr")
        assert inner.calls == 1  # the stamp is looked at no more than once a second
        clock.now += STAMP_CHECK_INTERVAL
        await cache.lookup("dr.martin@hopital.mssante.fr")
        assert inner.calls == 2

    asyncio.run(scenario())


def test_concurrent_questions_for_one_key_share_one_request() -> None:
    async def scenario() -> None:
        cache, inner, _ = make()
        inner.delay = 0.05
        results = await asyncio.gather(*(cache.lookup("dr.martin@hopital.mssante.fr") for _ in range(20)))
        assert results == [DOCTOR] * 20
        assert inner.calls == 1

    asyncio.run(scenario())


def test_concurrent_questions_all_see_a_failure() -> None:
    async def scenario() -> None:
        cache, inner, _ = make()
        inner.delay, inner.down = 0.05, True
        results = await asyncio.gather(*(cache.lookup("dr.martin@hopital.mssante.fr") for _ in range(5)),
                                       return_exceptions=True)
        assert all(isinstance(r, AnnuaireUnavailable) for r in results)

    asyncio.run(scenario())


def test_searches_always_ask_the_directory() -> None:
    async def scenario() -> None:
        cache, inner, _ = make()
        await cache.search("martin")
        await cache.search("martin")
        assert inner.calls == 2

    asyncio.run(scenario())
