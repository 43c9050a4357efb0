"""Which client delivers a queued recipient: mes_bridge (LMTP) for patients, peer operators (SMTP) otherwise.

Patients' mail goes through the same durable queue as mail to peer operators, so it has the same
guarantees (leases, retries on the ``[outbound]`` schedule, expiry, DSNs); only the last hop differs.
"""

from __future__ import annotations

from mssante_base.patients.ins import PATIENT_DOMAIN

from ..outcomes import Reply, ResultKind
from .lmtp_client import LmtpClient
from .outbound import OutboundClient, OutgoingMessage, RecipientResult

PATIENTS_NOT_CONFIGURED = Reply(ResultKind.TEMPORARY, "patient messaging is not configured on this operator "
                                "([patients] in config.toml)", enhanced="4.3.0")


class DeliveryTargets:
    """The queue runner's client: picks the last hop by the recipients' domain."""

    def __init__(self, outbound: OutboundClient, patients: LmtpClient | None) -> None:
        self.outbound = outbound
        self.patients = patients

    async def send(self, domain: str, message: OutgoingMessage) -> list[RecipientResult]:
        if domain != PATIENT_DOMAIN:
            return await self.outbound.send(domain, message)
        if self.patients is None:
            return [RecipientResult(r.key, PATIENTS_NOT_CONFIGURED) for r in message.recipients]
        return await self.patients.send(message)

    async def close(self) -> None:
        await self.outbound.close()
        if self.patients is not None:
            await self.patients.close()
