"""One error type for every refusal, carrying what an SMTP reply needs.

Checks raise or return a :class:`Refusal`; listeners turn it into a reply. Keeping the code, the
enhanced status and the human sentence together means no layer has to guess whether a failure is
temporary (4xx: the peer retries) or permanent (5xx: the peer bounces).
"""

from __future__ import annotations


class Refusal(Exception):
    """A refusal with its SMTP reply code, RFC 3463 enhanced status and explanation, and the name of the
    check that made it (for logs and metrics; not part of the reply, nor of equality).

    An ordinary exception whose fields are read-only properties: Python may set its ``__traceback__``
    (as ``contextlib`` does), ``pickle`` rebuilds it from its arguments (process pools, logging queues).
    A frozen dataclass could do neither.
    """

    def __init__(self, code: int, enhanced: str, text: str, check: str = "") -> None:
        if not (400 <= code < 600):
            raise ValueError(f"refusal code must be 4xx or 5xx, got {code}")
        if enhanced[0] != str(code)[0]:
            raise ValueError(f"enhanced status {enhanced} does not match reply code {code}")
        super().__init__(code, enhanced, text, check)  # args: what pickle passes back to __init__
        self._code, self._enhanced, self._text, self._check = code, enhanced, text, check

    @property
    def code(self) -> int:
        return self._code

    @property
    def enhanced(self) -> str:
        return self._enhanced

    @property
    def text(self) -> str:
        return self._text

    @property
    def check(self) -> str:
        """The name of the check that refused ("" when not said)."""
        return self._check

    def with_check(self, check: str) -> Refusal:
        """The same refusal, said to be made by the check named ``check``."""
        return Refusal(self._code, self._enhanced, self._text, check)

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

    def __repr__(self) -> str:
        return f"Refusal({self.code!r}, {self.enhanced!r}, {self.text!r}, check={self.check!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Refusal):
            return NotImplemented
        return (self._code, self._enhanced, self._text) == (other._code, other._enhanced, other._text)

    def __hash__(self) -> int:
        return hash((self._code, self._enhanced, self._text))


class ConfigError(Exception):
    """The configuration file is unreadable or invalid; the message names the file and the key."""


class TemporaryFailure(Exception):
    """A dependency (directory, DNS, bridge) could not answer now; callers map it to a 4xx reply."""
