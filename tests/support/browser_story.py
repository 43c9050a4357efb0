"""The patient's story on a served demo kit, shared by tests/test_browser_patient_story.py and scripts/screenshots.py.

Everything goes through the kit's real doors, as people would use them: the doctor writes through the
operator's submission listener (SMTPS, password of demo.json), the patient's one-time code is read from
the bridge's notification outbox (``mes-bridge notifications``, what the patient gets by e-mail), the
doctor's INBOX is read with ``mssante-operator mailbox ls``. The samples are tests/support/filing_samples.py's.
"""

from __future__ import annotations

import json
import re
import smtplib
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from mes_bridge.service import open_store
from mes_bridge.settings import load_bridge_settings
from mssante_base.patients.ins import validate_ins
from mssante_base.patients.xdm import PatientId, build_xdm
from mssante_operator.demo_kit import read_manifest

from .filing_samples import NIR_OID, pdf, xdm_document

if TYPE_CHECKING:
    from playwright.sync_api import Page

LOGIN_CODE = re.compile(r"code de connexion est : (\d{6})")
BIN = Path(sys.executable).parent  # the venv's console scripts (mes-bridge, mssante-operator)
LAB_SUBJECT = "Vos résultats de biologie"
LAB_TITLE = "Bilan sanguin du 14 mars"
LAB_BODY = ("Bonjour Madame,\n\nVoici les résultats de votre bilan sanguin : ils sont normaux.\n\n"
            "Bien cordialement,\nDr Martin\n")
# A red block drawn across the page: a viewer that really shows the PDF paints a large red area.
RED_BLOCK = ") Tj ET 1 0 0 rg 72 420 468 280 re f BT ("


def lab_pdf() -> bytes:
    """A one-page lab report PDF: a line of text and a large red rectangle (to see that a viewer drew it)."""
    return pdf("Hemoglobine 13,5 g/dL" + RED_BLOCK)


@dataclass(frozen=True)
class Kit:
    """A demo kit (HOME and its demo.json) being served by ``mssante-operator serve``."""

    home: Path
    manifest: dict[str, Any]

    @classmethod
    def read(cls, home: Path) -> Kit:
        return cls(home, read_manifest(home))

    @property
    def patient(self) -> dict[str, Any]:
        """The active patient (Sophie Lefèvre): INS, address, password, e-mail."""
        return next(patient for patient in self.manifest["patients"] if patient["state"] == "active")

    @property
    def child(self) -> dict[str, Any]:
        """Sophie's daughter Léa: INS, address, her provisional code, Sophie as representative."""
        return next(patient for patient in self.manifest["patients"] if "representatives" in patient)

    def mailbox(self, local_part: str) -> dict[str, Any]:
        """A mailbox of the kit by the part before "@" (address, kind, password …)."""
        return next(box for box in self.manifest["mailboxes"] if box["address"].startswith(local_part + "@"))

    @property
    def url(self) -> str:
        """The patient web space (HTTPS)."""
        web = self.manifest["listeners"]["web"]
        return f"https://{web['host']}:{web['port']}"

    def web_certificates(self) -> list[x509.Certificate]:
        """The bridge's chain (leaf and CA): the only keys the browser accepts for the web space."""
        return x509.load_pem_x509_certificates((self.home / self.manifest["bridge_cert"]).read_bytes())

    def received(self, ins: str | None = None) -> int:
        """How many messages a space (the active patient's by default) holds (read from the bridge's store)."""
        store = open_store(load_bridge_settings(self.home))
        try:
            return len(store.messages(validate_ins(ins or self.patient["ins"])))
        finally:
            store.close()


def wait_until(done: Callable[[], bool], what: str, timeout: float = 20.0, step: float = 0.1) -> None:
    """Poll ``done`` until it is true; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f} s")
        time.sleep(step)


def doctor_message(kit: Kit, doctor: dict[str, Any], subject: str, body: str, *,
                   attachments: tuple[tuple[str, str, bytes], ...] = (),
                   headers: dict[str, str] | None = None, patient: dict[str, Any] | None = None) -> EmailMessage:
    """A professional's message to a patient (the active one by default); attachments are (filename,
    Content-Type, bytes)."""
    msg = EmailMessage()
    msg["From"] = doctor["address"]
    msg["To"] = (patient or kit.patient)["address"]
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=kit.manifest["operator"]["domain"])
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    for filename, content_type, data in attachments:
        maintype, _, subtype = content_type.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def lab_report(kit: Kit, doctor: dict[str, Any], report: bytes, *, subject: str = LAB_SUBJECT,
               title: str = LAB_TITLE, type_code: str = "11502-2", filename: str = "bilan.pdf",
               body: str = LAB_BODY, patient: dict[str, Any] | None = None,
               confidentiality: tuple[str, ...] = ("N",)) -> EmailMessage:
    """A report as a PDF and an IHE_XDM.ZIP describing it (``type_code``, the patient's INS; the default
    11502-2 files it under "Résultats de biologie"), with a text body, asking for a read receipt."""
    patient = patient or kit.patient
    document = xdm_document(filename, report, title=title, type_code=type_code,  # author: Dr Claire MARTIN
                            confidentiality=confidentiality)
    archive = build_xdm(PatientId(patient["ins"], NIR_OID), [document])
    return doctor_message(
        kit, doctor, subject, body,
        attachments=((filename, "application/pdf", report), ("IHE_XDM.ZIP", "application/zip", archive)),
        headers={"Disposition-Notification-To": doctor["address"]}, patient=patient)


def doctor_sends(kit: Kit, doctor: dict[str, Any], msg: EmailMessage, *, ins: str | None = None) -> None:
    """Submit ``msg`` as ``doctor`` (SMTPS + AUTH) and wait until it is in the patient's (``ins``) space."""
    before = kit.received(ins)
    context = ssl.create_default_context(cafile=str(kit.home / kit.manifest["trust_ca"]))
    context.check_hostname = False  # the kit's certificates name the operator's host, we dial 127.0.0.1
    submissions = kit.manifest["listeners"]["submissions"]
    with smtplib.SMTP_SSL(submissions["host"], submissions["port"], context=context, timeout=30) as client:
        client.login(doctor["address"], doctor["password"])
        client.send_message(msg)
    wait_until(lambda: kit.received(ins) > before, "the doctor's message in the patient's space")


def _json_lines(*command: str) -> list[dict[str, Any]]:
    done = subprocess.run([str(BIN / command[0]), *command[1:]], capture_output=True, text=True, timeout=60,
                          check=True)
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def login_code(kit: Kit) -> str:
    """The newest one-time code sent to the active patient (``mes-bridge notifications``)."""
    notices = _json_lines("mes-bridge", "notifications", "--ins", kit.patient["ins"], "--home", str(kit.home))
    for notice in reversed(notices):
        if notice["kind"] == "login-code" and (found := LOGIN_CODE.search(notice["body"])):
            return found.group(1)
    raise LookupError("no login code in the bridge's notifications")


def inbox_of(kit: Kit, address: str) -> list[dict[str, Any]]:
    """The INBOX of a mailbox of the kit (``mssante-operator mailbox ls``): uid, from, subject …"""
    return _json_lines("mssante-operator", "mailbox", "ls", address, "--home", str(kit.home))


def sign_in(page: Page, kit: Kit, *, on_login_page: Callable[[Page], Any] | None = None) -> None:
    """Password then one-time code, as the patient does; ``on_login_page`` runs on each of the two forms."""
    page.goto(kit.url + "/connexion")
    if on_login_page:
        on_login_page(page)
    page.get_by_label("Matricule INS").fill(kit.patient["ins"])
    page.get_by_label("Mot de passe").fill(kit.patient["password"])
    page.get_by_role("button", name="Se connecter").click()
    page.wait_for_url(kit.url + "/connexion/code")
    if on_login_page:
        on_login_page(page)
    page.get_by_label("Code reçu").fill(login_code(kit))
    page.get_by_role("button", name="Valider").click()
    page.wait_for_url(kit.url + "/")


def red_share(page: Page, png: bytes) -> float:
    """The share of clearly red pixels in a screenshot, counted by the browser itself (a canvas on
    about:blank), so that no image library is needed."""
    import base64

    page.goto("about:blank")
    return float(page.evaluate("""async (data) => {
        const image = new Image();
        image.src = "data:image/png;base64," + data;
        await image.decode();
        const canvas = document.createElement("canvas");
        canvas.width = image.width; canvas.height = image.height;
        const context = canvas.getContext("2d");
        context.drawImage(image, 0, 0);
        const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
        let red = 0;
        for (let i = 0; i < pixels.length; i += 4) {
            if (pixels[i] > 200 && pixels[i + 1] < 60 && pixels[i + 2] < 60) red++;
        }
        return red / (canvas.width * canvas.height);
    }""", base64.b64encode(png).decode("ascii")))
