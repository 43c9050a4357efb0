"""Smoke test of the browser harness: Debian's Chromium, driven by Playwright, on a loopback HTTPS page.

A form is filled and posted, the answer read, a screenshot taken, the page checked at phone width; and a
server whose certificate the harness does not trust is refused (TLS is really checked, not ignored).
"""

from __future__ import annotations

import html
from pathlib import Path

import pytest
from aiohttp import web
from support.browser import BrowserPki, horizontal_overflow, make_browser_pki, page_problems, serving

STYLE = """
body { font-family: sans-serif; margin: 0 auto; max-width: 40rem; padding: 1rem; }
label, input, button { display: block; width: 100%; box-sizing: border-box; margin-bottom: .5rem; }
"""
HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'self'; form-action 'self'",
           "Cache-Control": "no-store"}


def _page(body: str) -> web.Response:
    text = ('<!doctype html><html lang="fr"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="stylesheet" href="/style.css"><title>Essai</title></head><body>{body}</body></html>')
    return web.Response(text=text, content_type="text/html", headers=HEADERS)


async def _form(request: web.Request) -> web.Response:
    return _page('<form method="post" action="/bonjour"><label for="nom">Votre nom</label>'
                 '<input id="nom" name="nom" required><button type="submit">Envoyer</button></form>')


async def _greet(request: web.Request) -> web.Response:
    name = (await request.post()).get("nom", "")
    return _page(f'<p id="reponse">Bonjour, {html.escape(str(name))} !</p>')


async def _style(request: web.Request) -> web.Response:
    return web.Response(text=STYLE, content_type="text/css", headers=HEADERS)


def _app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", _form)
    app.router.add_post("/bonjour", _greet)
    app.router.add_get("/style.css", _style)
    return app


def test_form_screenshot_and_phone_width(browser_pki: BrowserPki, new_page, tmp_path: Path) -> None:
    with serving(_app(), browser_pki.server_ssl()) as url:
        page = new_page("desktop")
        problems = page_problems(page)
        page.goto(url + "/")
        page.get_by_label("Votre nom").fill("Jeanne <Test>")
        page.get_by_role("button", name="Envoyer").click()
        assert page.locator("#reponse").inner_text() == "Bonjour, Jeanne <Test> !"
        assert page.url == url + "/bonjour"
        shot = tmp_path / "bonjour.png"
        page.screenshot(path=shot, full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        phone = new_page("phone")
        phone.goto(url + "/")
        assert phone.viewport_size == {"width": 360, "height": 740}
        assert horizontal_overflow(phone) == 0
        box = phone.get_by_role("button", name="Envoyer").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360
        assert problems == []  # no console error: the stylesheet passed the CSP, no script failed


def test_untrusted_certificate_refused(new_page, tmp_path: Path) -> None:
    stranger = make_browser_pki(tmp_path / "stranger")  # another CA: its key is not in the browser's list
    with serving(_app(), stranger.server_ssl()) as url:
        page = new_page()
        with pytest.raises(Exception, match="ERR_CERT"):
            page.goto(url + "/")
