"""One error type for every refusal, carrying what an SMTP reply needs.

Checks raise or return a :class:`Refusal`; listeners turn it into a reply. Keeping the code, the
enhanced status and the human sentence together means no layer has to guess whether a failure is
temporary (4xx: the peer retries) or permanent (5xx: the peer bounces).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Refusal(Exception):
    """A refusal with its SMTP reply code, RFC 3463 enhanced status and explanation."""

    code: int
    enhanced: str
    text: str

    def __post_init__(self) -> None:
        if not (400 <= self.code < 600):
            raise ValueError(f"refusal code must be 4xx or 5xx, got {self.code}")
        if self.enhanced[0] != str(self.code)[0]:
            raise ValueError(f"enhanced status {self.enhanced} does not match reply code {self.code}")

    @property
    def temporary(self) -> bool:
        """True for 4xx replies: the sender should retry later."""
        return self.code < 500

    @property
    def reply(self) -> str:
        """The SMTP reply line, without CRLF."""
        return f"{self.code} {self.enhanced} {self.text}"

    def __str__(self) -> str:
        return self.reply


class ConfigError(Exception):
    """The configuration file is unreadable or invalid; the message names the file and the key."""


class TemporaryFailure(Exception):
    """A dependency (directory, DNS, bridge) could not answer now; callers map it to a 4xx reply."""
