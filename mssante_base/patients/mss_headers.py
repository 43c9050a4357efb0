"""The ``X-MSS-INS`` and ``X-MSS-CODECDA`` headers of a message carrying an IHE XDM archive (Référentiel #2 §3.8).

A sender that files documents in a patient's space declares, in headers, what its archive holds:
``X-MSS-CODECDA`` the typeCode of each CDA document, ``X-MSS-INS`` ``O`` when the patient is identified by
a qualified INS (an INS identifier and the four identity traits), ``N`` otherwise. The receiving side trusts
those headers to route and index without opening the archive, so a message whose headers do not match its
archive is refused here, permanently (the same message would fail again). The headers are kept as received.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections import defaultdict
from collections.abc import Sequence
from email.message import EmailMessage
from typing import cast

from mssante_base.errors import Refusal
from mssante_base.message.headers import split_header
from mssante_base.patients.ins import Ins
from mssante_base.patients.xdm import XdmDocument, XdmError, XdmPackage, find_xdm_attachments, read_xdm

INS_HEADER = "X-MSS-INS"
CODECDA_HEADER = "X-MSS-CODECDA"
_ANNOUNCED = re.compile(rb"^x-mss-(?:ins|codecda)[ \t]*:", re.I | re.M)


def mss_header_values(message: EmailMessage) -> dict[str, list[str]]:
    """Every ``X-MSS-*`` header's values (whitespace folded), by upper-case name, in message order."""
    values: dict[str, list[str]] = defaultdict(list)
    for name, value in message.items():
        if name.upper().startswith("X-MSS-"):
            values[name.upper()].append(" ".join(str(value).split()))
    return dict(values)


def check_mss_headers(message: EmailMessage, patient_recipients: Sequence[Ins]) -> Refusal | None:
    """None when the message has no X-MSS-INS/X-MSS-CODECDA or they match its XDM archive; else a 550 5.6.0."""
    if INS_HEADER not in message and CODECDA_HEADER not in message:
        return None
    headers = mss_header_values(message)
    ins_values = headers.get(INS_HEADER)
    declared_ins = None
    if ins_values is not None:
        if len(ins_values) != 1 or ins_values[0].strip().upper() not in ("O", "N"):
            return _refused("l'en-tête X-MSS-INS doit valoir O ou N, une seule fois",
                            "the X-MSS-INS header must be O or N, once")
        declared_ins = ins_values[0].strip().upper()
    documents = _documents(message)
    if isinstance(documents, Refusal):
        return documents
    package = XdmPackage(documents)
    patients = package.patients
    if len(patients) > 1:
        return _refused("l'archive IHE_XDM concerne plusieurs patients",
                        "the IHE_XDM archive holds documents about several patients")
    codecda_values = headers.get(CODECDA_HEADER)
    if codecda_values is not None:
        declared = {code.strip() for value in codecda_values for code in value.split(",") if code.strip()}
        found = package.cda_type_codes
        if declared != found:
            listed = ",".join(sorted(found)) or "(aucun / none)"
            return _refused(f"X-MSS-CODECDA ne correspond pas aux documents CDA de l'archive IHE_XDM ({listed})",
                            f"X-MSS-CODECDA does not match the CDA documents of the IHE_XDM archive ({listed})")
    qualified = any(doc.qualified_ins is not None for doc in documents)
    if declared_ins == "O" and not qualified:
        return _refused("X-MSS-INS vaut O mais l'archive IHE_XDM ne porte pas d'INS qualifié (identifiant INS, "
                        "nom, prénom, date de naissance et sexe)",
                        "X-MSS-INS is O but the IHE_XDM archive has no qualified INS (INS identifier, family name, "
                        "first name, birth date and sex)")
    if declared_ins == "N" and qualified:
        return _refused("X-MSS-INS vaut N mais l'archive IHE_XDM porte un INS qualifié",
                        "X-MSS-INS is N but the IHE_XDM archive has a qualified INS")
    archive_ins = {patient.value.upper() for patient in patients if patient.is_ins}
    for recipient in patient_recipients:
        if archive_ins and recipient.value not in archive_ins:
            return _refused(f"les documents de l'archive IHE_XDM ne concernent pas le patient {recipient.address}",
                            f"the documents of the IHE_XDM archive are not about the patient {recipient.address}")
    return None


def announces_xdm(raw: bytes) -> bool:
    """Whether the message's header block holds X-MSS-INS or X-MSS-CODECDA (a quick look, no parsing)."""
    header, _ = split_header(raw)
    return _ANNOUNCED.search(header) is not None


def check_raw_mss_headers(raw: bytes, patient_recipients: Sequence[Ins]) -> Refusal | None:
    """:func:`check_mss_headers` on a received message's bytes, parsing the MIME body only when announced."""
    if not announces_xdm(raw):
        return None
    message = cast(EmailMessage, email.message_from_bytes(raw, policy=email.policy.default))  # what it builds
    return check_mss_headers(message, patient_recipients)


def _documents(message: EmailMessage) -> tuple[XdmDocument, ...] | Refusal:
    """The documents of every XDM archive of the message, or the refusal saying why there is none to read."""
    archives = find_xdm_attachments(message)
    if not archives:
        return _refused("les en-têtes X-MSS-INS/X-MSS-CODECDA annoncent une archive IHE_XDM absente du message",
                        "the X-MSS-INS/X-MSS-CODECDA headers announce an IHE_XDM archive the message does not carry")
    documents: list[XdmDocument] = []
    for data in archives:
        try:
            documents.extend(read_xdm(data).documents)
        except XdmError as exc:
            return _refused("l'archive IHE_XDM est illisible", f"the IHE_XDM archive is unreadable: {exc}")
    return tuple(documents)


def _refused(french: str, english: str) -> Refusal:
    return Refusal(550, "5.6.0", f"{french} / {english}")
