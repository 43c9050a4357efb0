"""IMAP sequence sets (RFC 3501 section 9, ``sequence-set``): ``1:4,7,9:*``.

A set is kept as written, in ranges whose ``*`` is resolved only when the server knows the largest
number in use (the message count for sequence numbers, the highest UID for UID sets).

Choices, following RFC 3501 section 9 and 6.4.8:

* ``*`` stands for ``max_value``; a range ``a:b`` covers every number between its ends, in either
  order, so ``559:*`` includes the last message even when 559 is above every UID in use.
* Members are always in ``1..max_value``: numbers above ``max_value`` name no message and are
  dropped, so an empty mailbox (``max_value == 0``) matches nothing, ``*`` included. Whether such
  numbers are an error (they are, for message sequence numbers) is the caller's call, with
  :meth:`SequenceSet.out_of_range`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

MAX_NUMBER = 2**32 - 1
"""``nz-number`` is a 32-bit unsigned value (RFC 3501 section 9, ``number``)."""

_SEQ_NUMBER = r"(?:[1-9][0-9]*|\*)"
_SEQUENCE_SET = re.compile(rf"{_SEQ_NUMBER}(?::{_SEQ_NUMBER})?(?:,{_SEQ_NUMBER}(?::{_SEQ_NUMBER})?)*")

Range = tuple[int | None, int | None]
"""``(low, high)``; ``None`` is ``*``. A single number ``n`` is ``(n, n)``; ``*`` alone is ``(None, None)``."""


@dataclass(frozen=True)
class SequenceSet:
    """A parsed ``sequence-set``: ranges in the client's order, ends normalised (low first, ``*`` last)."""

    ranges: tuple[Range, ...]

    @classmethod
    def parse(cls, text: str) -> SequenceSet:
        """Parse ``1:4,7,9:*``; ValueError on ``0``, leading zeros, empty parts, numbers above 2**32-1 or junk."""
        if not _SEQUENCE_SET.fullmatch(text):
            raise ValueError(f"invalid sequence set {text!r}")
        ranges = []
        for part in text.split(","):
            first, _, last = part.partition(":")
            ranges.append(_normalise(_number(first), _number(last or first)))
        return cls(tuple(ranges))

    @classmethod
    def from_numbers(cls, numbers: Iterable[int]) -> SequenceSet:
        """The compact set of ``numbers``, in the given order, runs of consecutive numbers folded.

        The order is kept because COPYUID (RFC 4315) pairs source and destination UIDs by position.
        """
        ranges: list[tuple[int, int]] = []
        for n in numbers:
            if not 1 <= n <= MAX_NUMBER:
                raise ValueError(f"{n} is not a valid message number")
            if ranges and ranges[-1][1] + 1 == n:
                ranges[-1] = (ranges[-1][0], n)
            else:
                ranges.append((n, n))
        if not ranges:
            raise ValueError("a sequence set cannot be empty")
        return cls(tuple(ranges))

    def intervals(self, max_value: int) -> list[tuple[int, int]]:
        """Sorted, disjoint, inclusive intervals within ``1..max_value`` (handy for SQL ``BETWEEN``)."""
        spans = sorted(span for r in self.ranges if (span := _resolve(r, max_value)) is not None)
        merged: list[tuple[int, int]] = []
        for low, high in spans:
            if merged and low <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(high, merged[-1][1]))
            else:
                merged.append((low, high))
        return merged

    def iter(self, max_value: int) -> Iterator[int]:
        """Every member in ascending order, each once."""
        for low, high in self.intervals(max_value):
            yield from range(low, high + 1)

    def contains(self, n: int, max_value: int) -> bool:
        """Whether ``n`` is a member, ``*`` being ``max_value``."""
        for r in self.ranges:
            span = _resolve(r, max_value)
            if span is not None and span[0] <= n <= span[1]:
                return True
        return False

    def out_of_range(self, max_value: int) -> bool:
        """True if a number exceeds ``max_value`` or ``*`` is used on an empty mailbox.

        For message sequence numbers this is a client error (RFC 9051 section 9: answer BAD);
        for UIDs it is normal and the set is simply clipped.
        """
        return any((n is None and max_value == 0) or (n is not None and n > max_value) for r in self.ranges for n in r)

    def __str__(self) -> str:
        """The canonical wire form, e.g. ``1:4,7,9:*``."""
        return ",".join(_render(r) for r in self.ranges)


def _number(text: str) -> int | None:
    """An ``nz-number`` (bounded to 32 bits) or ``None`` for ``*``."""
    if text == "*":
        return None
    value = int(text)
    if value > MAX_NUMBER:
        raise ValueError(f"{text} exceeds the 32-bit limit of sequence numbers")
    return value


def _normalise(first: int | None, last: int | None) -> Range:
    """Low end first and ``*`` last, since ``a:b`` and ``b:a`` are the same range."""
    if first is None:
        return (last, None)
    if last is None:
        return (first, None)
    return (min(first, last), max(first, last))


def _resolve(r: Range, max_value: int) -> tuple[int, int] | None:
    """The range as concrete bounds clipped to ``1..max_value``, or None when nothing is left."""
    low, high = r
    low = max_value if low is None else low
    high = max_value if high is None else high
    low, high = max(min(low, high), 1), min(max(low, high), max_value)
    return (low, high) if low <= high else None


def _render(r: Range) -> str:
    """One range in wire form: ``n``, ``*``, ``a:b`` or ``a:*``."""
    low, high = r
    if low is None:
        return "*"
    if high is None:
        return f"{low}:*"
    return str(low) if low == high else f"{low}:{high}"
