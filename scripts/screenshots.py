#!/usr/bin/env python3
"""Screenshots of the patient web space for the docs, taken in Debian's headless Chromium.

Run against a served demo kit (``mssante-operator serve --home HOME`` in another terminal):

    .venv/bin/python scripts/screenshots.py --home HOME [--out docs/screenshots]

It signs in as the kit's active patient (password from demo.json, one-time code read from the bridge's
notification outbox, as the patient would read it in their mail) and saves one PNG per page, at desktop
and phone width. The pictures show the kit's fictitious patients only.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the browser harness is shared with the end-to-end tests

from browser import CHROMIUM, chromium_browser, open_page  # noqa: E402

from mes_bridge.service import open_store  # noqa: E402
from mes_bridge.settings import load_bridge_settings  # noqa: E402
from mssante_operator.demo_kit import read_manifest  # noqa: E402

if TYPE_CHECKING:
    from playwright.sync_api import Page

CODE = re.compile(r"code de connexion est : (\d{6})")
VIEWPORTS = ("desktop", "phone")


@dataclass(frozen=True)
class Shot:
    """One picture: a file stem and how to reach the page (given the page and the site's base URL)."""

    name: str
    reach: Callable[[Page, str], Any]


def _go(path: str) -> Callable[[Page, str], Any]:
    return lambda page, url: page.goto(url + path)


def _first_link(path: str, prefix: str) -> Callable[[Page, str], Any]:
    """Open ``path`` then follow its first link to ``prefix…`` (ids differ from kit to kit)."""
    links = f"a[href^='{prefix}']:not([href$='/ajouter'])"
    return lambda page, url: (page.goto(url + path), page.locator(links).first.click())


# Routes of the spec (issue 7, "Web"), visited by a signed-in patient.
SHOTS = (
    Shot("messagerie", _go("/")),
    Shot("message", _first_link("/", "/messages/")),
    Shot("conversations", _go("/conversations")),
    Shot("documents", _go("/documents")),
    Shot("document", _first_link("/documents", "/documents/")),
    Shot("historique", _go("/historique")),
)


def web_url(home: Path) -> str:
    """The web listener of the kit's [bridge] table."""
    config = tomllib.loads((home / "config.toml").read_text(encoding="utf-8"))
    listener = config["bridge"]["listeners"]["web"]
    return f"https://{listener['host']}:{listener['port']}"


def bridge_certificates(home: Path) -> list[x509.Certificate]:
    """The bridge's chain (leaf and CA): the only keys the browser accepts for the web space."""
    manifest = read_manifest(home)
    return x509.load_pem_x509_certificates((home / manifest["bridge_cert"]).read_bytes())


def active_patient(home: Path) -> dict[str, Any]:
    return next(patient for patient in read_manifest(home)["patients"] if patient["state"] == "active")


def login_code(home: Path, ins: str) -> str:
    """The newest one-time code sent to the patient (the bridge's notification outbox)."""
    store = open_store(load_bridge_settings(home))
    for notification in reversed(store.notifications(ins)):
        if notification.kind == "login-code" and (found := CODE.search(notification.body)):
            return found.group(1)
    raise SystemExit("no login code in the bridge's notifications: did the password step fail?")


def sign_in(page: Page, url: str, home: Path, patient: dict[str, Any], out: Path, viewport: str) -> None:
    """Password then one-time code, saving the login page on the way."""
    page.goto(url + "/connexion")
    page.screenshot(path=out / f"connexion-{viewport}.png", full_page=True)
    page.get_by_label("Matricule INS").fill(patient["ins"])
    page.get_by_label("Mot de passe").fill(patient["password"])
    page.get_by_role("button", name="Se connecter").click()
    page.wait_for_url(url + "/connexion/code")
    page.get_by_label("Code reçu").fill(login_code(home, patient["ins"]))
    page.get_by_role("button", name="Valider").click()
    page.wait_for_url(url + "/")


def take(home: Path, out: Path) -> list[Path]:
    """All the pictures, both viewports; returns the files written."""
    url, patient = web_url(home), active_patient(home)
    out.mkdir(parents=True, exist_ok=True)
    with chromium_browser(bridge_certificates(home)) as browser:
        for viewport in VIEWPORTS:
            page = open_page(browser, viewport)
            sign_in(page, url, home, patient, out, viewport)
            for shot in SHOTS:
                shot.reach(page, url)
                page.wait_for_load_state()
                page.screenshot(path=out / f"{shot.name}-{viewport}.png", full_page=True)
            page.context.close()
    return sorted(out.glob("*.png"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="a demo kit being served")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="where the PNGs go")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium")
    for path in take(args.home.resolve(), args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
