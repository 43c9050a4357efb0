"""The fast reading of MAIL/RCPT paths gives exactly what aiosmtpd's RFC 5322 parser gives."""

from __future__ import annotations

import pytest
from aiosmtpd.smtp import SMTP

from mssante_base.smtp.server import GuardedSMTP

PATHS = [
    "<dr.martin@hopital-demo.mssante.fr>", "<a.b@c.fr> SIZE=5", " <a@b>", "<>", "a@b.fr", '<"a b"@c>',
    "<a@b.fr>SIZE=3", "<@relay.fr:a@b.fr>", "<a..b@c.fr>", "<a@b.fr> NOTIFY=SUCCESS  ORCPT=rfc822;x",
    "<.a@b.fr>", "<a@-b.fr>", "<a@b.fr.>", "<é@b.fr>", "<a@b.fr", "a@b.fr>", "<a b@c.fr>", "<a@[127.0.0.1]>",
    "<x+tag=1@b.fr> BODY=8BITMIME", "",
]


@pytest.mark.parametrize("arg", PATHS)
@pytest.mark.parametrize("limit", [0, 5])
def test_same_as_aiosmtpd(arg: str, limit: int) -> None:
    ours = GuardedSMTP.__new__(GuardedSMTP)
    theirs = SMTP.__new__(SMTP)
    ours.local_part_limit = theirs.local_part_limit = limit
    assert ours.read_path(arg) == SMTP._getaddr(theirs, arg)
