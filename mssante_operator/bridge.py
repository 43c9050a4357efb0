"""The operator's one door to mes_bridge: every use the operator makes of the bridge's code is wired here.

mes_bridge runs as a separate process (``workers.bridge_argv``); in this process the operator only
validates its ``[bridge]`` table at start-up and, for ``demo patient``, plays the patient's side.
"""

from __future__ import annotations

from collections.abc import Sequence

from mes_bridge.outgoing import SendOutcome, send_patient_message
from mes_bridge.service import open_store
from mes_bridge.settings import BridgeSettings, load_bridge_settings
from mssante_base.patients.ins import Ins

from .config import Settings


def bridge_settings(settings: Settings) -> BridgeSettings:
    """HOME's ``[bridge]`` table, validated as mes_bridge will read it (ConfigError names the key)."""
    return load_bridge_settings(settings.home, settings.bridge)


class PatientSide:
    """A patient's side of the bridge, as ``demo patient`` plays it: their space's messages, their sending."""

    def __init__(self, settings: Settings) -> None:
        self.settings = bridge_settings(settings)
        self.store = open_store(self.settings)

    def received(self, ins: Ins) -> int:
        """How many messages the patient's space holds."""
        return len(self.store.messages(ins))

    async def send(self, ins: Ins, *, to: Sequence[str], subject: str, body: str) -> SendOutcome:
        """The patient sends through the operator, as the bridge's web space does."""
        return await send_patient_message(self.settings, ins=ins, to=to, subject=subject, body=body, store=self.store)

    def close(self) -> None:
        self.store.close()
