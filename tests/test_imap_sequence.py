"""SequenceSet: RFC 3501 sequence-set syntax, `*` resolution, membership and rendering."""

from __future__ import annotations

import pytest

from mssante_operator.imap.sequence import SequenceSet


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        ("1", ((1, 1),)),
        ("*", ((None, None),)),
        ("1:4", ((1, 4),)),
        ("4:1", ((1, 4),)),
        ("9:*", ((9, None),)),
        ("*:10", ((10, None),)),
        ("*:*", ((None, None),)),
        ("1:4,7,9:*", ((1, 4), (7, 7), (9, None))),
        ("7,1", ((7, 7), (1, 1))),
        ("4294967295", ((4294967295, 4294967295),)),
    ],
)
def test_parse(text, ranges):
    assert SequenceSet.parse(text).ranges == ranges


@pytest.mark.parametrize(
    "text",
    ["", "0", "0:5", "5:0", "01", "1:02", "1,,2", ",1", "1,", "a", "1:2:3", "1 2", "-1", "$", "4294967296", "1:*:2"],
)
def test_parse_rejects(text):
    with pytest.raises(ValueError):
        SequenceSet.parse(text)


@pytest.mark.parametrize(
    ("text", "rendered"),
    [("1:4,7,9:*", "1:4,7,9:*"), ("*:10", "10:*"), ("3:3", "3"), ("*:*", "*"), ("10:2,1", "2:10,1")],
)
def test_str_is_canonical(text, rendered):
    assert str(SequenceSet.parse(text)) == rendered


@pytest.mark.parametrize(
    ("text", "max_value", "members"),
    [
        ("1:4,7,9:*", 10, [1, 2, 3, 4, 7, 9, 10]),
        ("1:5,3:7", 10, [1, 2, 3, 4, 5, 6, 7]),
        ("7,1:2", 10, [1, 2, 7]),
        ("*", 5, [5]),
        ("*:3", 5, [3, 4, 5]),
        ("559:*", 100, [100]),  # RFC 3501 6.4.8: n:* always includes the last message
        ("5", 3, []),  # above max: names no message
        ("2:8", 4, [2, 3, 4]),
        ("1:*", 0, []),  # empty mailbox: nothing matches, `*` included
        ("*", 0, []),
        ("1:4294967295", 3, [1, 2, 3]),  # clipped, not enumerated
    ],
)
def test_iter(text, max_value, members):
    assert list(SequenceSet.parse(text).iter(max_value)) == members


@pytest.mark.parametrize(
    ("text", "n", "max_value", "expected"),
    [
        ("1:4", 4, 10, True),
        ("1:4", 5, 10, False),
        ("*", 10, 10, True),
        ("*", 9, 10, False),
        ("9:*", 12, 20, True),
        ("30:*", 20, 20, True),
        ("30:*", 19, 20, False),
        ("1:10", 10, 5, False),
        ("1:*", 1, 0, False),
        ("2,4", 3, 10, False),
    ],
)
def test_contains(text, n, max_value, expected):
    assert SequenceSet.parse(text).contains(n, max_value) is expected


def test_intervals_are_merged_and_sorted():
    assert SequenceSet.parse("9:*,1:3,4:5,7").intervals(10) == [(1, 5), (7, 7), (9, 10)]


@pytest.mark.parametrize(
    ("text", "max_value", "expected"),
    [("1:5", 5, False), ("1:6", 5, True), ("*", 0, True), ("1", 0, True), ("*", 3, False), ("3:*", 2, True)],
)
def test_out_of_range(text, max_value, expected):
    assert SequenceSet.parse(text).out_of_range(max_value) is expected


@pytest.mark.parametrize(
    ("numbers", "rendered"),
    [([1, 2, 3, 5, 7, 8], "1:3,5,7:8"), ([5, 1, 2], "5,1:2"), ([4], "4"), ([3, 3], "3,3")],
)
def test_from_numbers_keeps_order(numbers, rendered):
    assert str(SequenceSet.from_numbers(numbers)) == rendered


@pytest.mark.parametrize("numbers", [[], [0], [1, 2**32]])
def test_from_numbers_rejects(numbers):
    with pytest.raises(ValueError):
        SequenceSet.from_numbers(numbers)
