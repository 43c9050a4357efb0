"""MAIL and RCPT arguments: the path apart from the ESMTP parameters (ours to read, aiosmtpd's to check)."""

from __future__ import annotations


def split_address(arg: str, keyword: str) -> tuple[str, str] | None:
    """("FROM:<a@b>", " PARAMS") from "FROM:<a@b> PARAMS"; None when the shape is not that."""
    if arg[: len(keyword)].upper() != keyword:
        return None
    rest = arg[len(keyword):].lstrip()
    end = rest.find(">") + 1 if rest.startswith("<") else (rest.find(" ") if " " in rest else len(rest))
    if end <= 0:
        return None
    return arg[: len(arg) - len(rest)] + rest[:end], rest[end:]

