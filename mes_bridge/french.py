"""French dates and sizes as the patient reads them, in Paris time: shared by the web space's pages and the
export's human-readable history (which must not need the web layer)."""

from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")
MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
          "novembre", "décembre")


def date_fr(value: datetime | None, *, time: bool = True) -> str:
    """« 3 mars 2024 à 10 h 05 » in Paris time (what the patient's clock says)."""
    if value is None:
        return ""
    local = value.astimezone(PARIS)
    day = f"{local.day} {MONTHS[local.month - 1]} {local.year}"
    return f"{day} à {local.hour} h {local.minute:02d}" if time else day


def size_fr(size: int) -> str:
    if size < 1024:
        return f"{size} octets"
    if size < 1024 * 1024:
        return f"{math.ceil(size / 1024)} Ko"
    return f"{size / (1024 * 1024):.1f} Mo".replace(".", ",")
