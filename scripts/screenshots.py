#!/usr/bin/env python3
"""Screenshots of the patient web space for the docs, taken in Debian's headless Chromium.

Run against a served demo kit (``mssante-operator serve --home HOME`` in another terminal):

    .venv/bin/python scripts/screenshots.py --home HOME [--out docs/screenshots] [--no-seed]

First it seeds the story through the kit's real doors (tests/support/browser_story.py): Dr Martin sends the
active patient a lab report and an ultrasound report (PDF + IHE_XDM.ZIP each) through the submission
listener, Dr Durand ends his exchange with her (``X-MSS-MES: FIN``). Then it signs in as the patient
(password from demo.json, one-time code from the bridge's notification outbox) and saves one PNG per
page: the desktop set at 1280 px wide, a few at phone width (360 px). Pictures are cut at a fixed height
to stay small. They show the kit's fictitious patients only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the browser harness and the story are shared with the tests

from support.browser import CHROMIUM, chromium_browser, open_page  # noqa: E402
from support.browser_story import LAB_SUBJECT, LAB_TITLE, Kit, doctor_message, doctor_sends, lab_report, sign_in  # noqa: E402
from support.filing_samples import pdf  # noqa: E402

if TYPE_CHECKING:
    from playwright.sync_api import Page

FIN_SUBJECT = "Fin du suivi"
MAX_HEIGHT = {"desktop": 1000, "phone": 1400}  # CSS pixels kept from the top of a page


@dataclass(frozen=True)
class Shot:
    """One picture: a file stem and how to reach the page from the inbox of a signed-in patient."""

    name: str
    reach: Callable[[Page, str], Any]
    phone: bool = False  # also taken at phone width


def _go(path: str) -> Callable[[Page, str], Any]:
    return lambda page, url: page.goto(url + path)


def _link(path: str, name: str) -> Callable[[Page, str], Any]:
    """Open ``path`` then follow the link named ``name`` (ids differ from kit to kit)."""
    return lambda page, url: (page.goto(url + path), page.get_by_role("link", name=name).first.click())


# In this order: the inbox before any message is opened (unread marks), the history last (it tells the rest).
SHOTS = (
    Shot("messagerie", _go("/"), phone=True),
    Shot("message", _link("/", LAB_SUBJECT), phone=True),
    Shot("documents", _go("/documents")),
    Shot("document", _link("/documents?categorie=BIOLOGIE", LAB_TITLE)),
    Shot("fin-des-echanges", _link("/", FIN_SUBJECT)),
    Shot("historique", _go("/historique")),
)


def seed(kit: Kit) -> None:
    """The doctors' messages, through the operator's submission listener (waits for each delivery)."""
    martin, durand = kit.mailbox("dr.martin"), kit.mailbox("paul.durand")
    doctor_sends(kit, martin, lab_report(kit, martin, pdf("Hemoglobine 13,5 g/dL - normal")))
    doctor_sends(kit, martin, lab_report(
        kit, martin, pdf("Echographie abdominale : normale"), subject="Compte rendu de votre échographie",
        title="Échographie abdominale", type_code="18760-9", filename="echographie.pdf",
        body="Bonjour Madame,\n\nCi-joint le compte rendu de votre échographie.\n\nDr Martin\n"))
    doctor_sends(kit, durand, doctor_message(
        kit, durand, FIN_SUBJECT, "Bonjour Madame,\n\nVotre suivi dans le service est terminé. "
        "Pour toute question, adressez-vous à votre médecin traitant.\n\nDr Durand\n", headers={"X-MSS-MES": "FIN"}))


def save(page: Page, path: Path, viewport: str) -> Path:
    """The top of the page (full width, at most MAX_HEIGHT high) as a PNG."""
    size = page.viewport_size or {"width": 1280, "height": 800}
    height = min(int(page.evaluate("document.documentElement.scrollHeight")), MAX_HEIGHT[viewport])
    page.screenshot(path=path, full_page=True, clip={"x": 0, "y": 0, "width": size["width"], "height": height})
    return path


def take(kit: Kit, out: Path) -> list[Path]:
    """All the pictures, desktop then phone; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with chromium_browser(kit.web_certificates()) as browser:
        for viewport in ("desktop", "phone"):
            page = open_page(browser, viewport)
            suffix = "" if viewport == "desktop" else "-mobile"

            def login_page(page: Page, suffix: str = suffix, viewport: str = viewport) -> None:
                if page.url.endswith("/connexion"):
                    written.append(save(page, out / f"connexion{suffix}.png", viewport))

            sign_in(page, kit, on_login_page=login_page)
            for shot in SHOTS:
                if viewport == "desktop" or shot.phone:
                    shot.reach(page, kit.url)
                    page.wait_for_load_state()
                    written.append(save(page, out / f"{shot.name}{suffix}.png", viewport))
            page.context.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="a demo kit being served")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="where the PNGs go")
    parser.add_argument("--no-seed", action="store_true", help="the doctors' messages were sent already")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium")
    kit = Kit.read(args.home.resolve())
    if not args.no_seed:
        seed(kit)
    for path in take(kit, args.out):
        print(f"{path} {path.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
