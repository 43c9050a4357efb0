"""Distinguished names compared by meaning, not by spelling.

The liste blanche writes DNs as text (``CN=smtp1.op.fr,OU=318003502400041,O=OP,ST=Paris (75),C=FR``)
while TLS gives us a certificate subject. Attribute order, spacing around separators, case of the
attribute types and of the values, and escaping may all differ for one same name.
"""

from __future__ import annotations

import unicodedata

from cryptography import x509

_SHORT_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.11": "OU",
    "2.5.4.10": "O",
    "2.5.4.8": "ST",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.5": "SERIALNUMBER",
    "2.5.4.4": "SN",
    "2.5.4.42": "GN",
    "2.5.4.12": "T",
    "1.2.840.113549.1.9.1": "EMAILADDRESS",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}
_ALIASES = {"S": "ST", "E": "EMAILADDRESS", "EMAIL": "EMAILADDRESS", "STREET": "STREET"}

NormalDn = frozenset[tuple[str, str]]


def _norm_value(value: str) -> str:
    return " ".join(unicodedata.normalize("NFC", value).split()).casefold()


def _norm_type(attr_type: str) -> str:
    attr_type = attr_type.strip().upper()
    if attr_type.startswith("OID."):
        attr_type = attr_type[4:]
    attr_type = _SHORT_NAMES.get(attr_type, attr_type)
    return _ALIASES.get(attr_type, attr_type)


def _split_unescaped(text: str, separators: str) -> list[str]:
    """Split on separators that are not escaped with a backslash or inside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    escaped = quoted = False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
            current.append(char)
        elif char in separators and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped or quoted:
        raise ValueError("unterminated escape or quote in DN")
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    out: list[str] = []
    raw = bytearray()
    i = 0
    while i < len(value):
        char = value[i]
        if char == "\\" and i + 1 < len(value):
            pair = value[i + 1 : i + 3]
            if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
                raw.append(int(pair, 16))
                i += 3
                continue
            if raw:
                out.append(raw.decode("utf-8", "replace"))
                raw.clear()
            out.append(value[i + 1])
            i += 2
            continue
        if raw:
            out.append(raw.decode("utf-8", "replace"))
            raw.clear()
        out.append(char)
        i += 1
    if raw:
        out.append(raw.decode("utf-8", "replace"))
    return "".join(out)


def parse_dn(text: str) -> NormalDn:
    """Parse an RFC 4514-style DN (comma or semicolon separated, ``+`` for multi-valued RDNs).

    Raises ValueError when the text is not a DN.
    """
    pairs: set[tuple[str, str]] = set()
    for rdn in _split_unescaped(text, ",;"):
        if not rdn.strip():
            continue
        for ava in _split_unescaped(rdn, "+"):
            attr_type, sep, value = ava.partition("=")
            if not sep or not attr_type.strip():
                raise ValueError(f"not an attribute=value pair: {ava.strip()!r}")
            pairs.add((_norm_type(attr_type), _norm_value(_unescape(value))))
    if not pairs:
        raise ValueError("empty DN")
    return frozenset(pairs)


def name_to_dn(name: x509.Name) -> NormalDn:
    """The normal form of a certificate subject or issuer."""
    return frozenset(
        (_norm_type(attr.oid.dotted_string), _norm_value(str(attr.value))) for attr in name
    )


def name_to_text(name: x509.Name) -> str:
    """A certificate name written as the liste blanche writes it (RFC 4514, most significant last)."""
    return name.rfc4514_string()
