"""Headless Chromium for end-to-end tests: Debian's /usr/bin/chromium driven by Playwright's sync API.

Never ``playwright install``: the machine's network is closed, the browser is the distribution's.
conftest.py registers the fixtures below (``pytest_plugins``); test modules import the helpers, e.g.
``from support.browser import serving, page_problems`` (tests/ is on sys.path).

Fixtures:
- ``browser_pki`` (session): a test CA and a 127.0.0.1/localhost server certificate on disk, for HTTPS
  servers under test; ``browser_trust`` (module) lists the certificates whose public keys Chromium
  accepts (default: that CA) — a module whose server has its own CA overrides it.
- ``chromium`` (module): one Browser per module. While it lives, ``asyncio.run()`` fails in the test
  thread (Playwright's loop counts as running there): run async code on the server's own loop.
- ``new_page(viewport="desktop" | "phone" | (width, height))``: a Page in a fresh context (fresh cookies);
  ``browser_page`` (desktop) and ``phone_page`` (360x740, mobile) are shortcuts.

A missing browser skips the test, except in CI (env CI=true), where bootstrap installs it: there it fails.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mssante_base.trust.tls import server_context
from mssante_operator.trust_space import dev_pki

from .postgres import in_ci

if TYPE_CHECKING:
    import ssl

    from playwright.sync_api import Browser, BrowserContext, Page

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking switches Chromium keeps dialling Google's hosts, which the closed
# network refuses; Playwright adds most of these itself, we keep them explicit so a version change can't drop them.
CHROMIUM_ARGS = (
    "--no-sandbox",  # we run as root in a container: Chromium's sandbox needs user namespaces we don't have
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORTS: dict[str, dict[str, Any]] = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True},
}
TIMEOUT_MS = 10_000  # a page of ours answers in milliseconds: fail fast rather than at pytest's timeout


def require_chromium() -> Path:
    """The browser's path; skips the test when it is missing, except in CI where that is an error."""
    if CHROMIUM.exists():
        return CHROMIUM
    message = f"{CHROMIUM} is not installed (apt-get install chromium; scripts/bootstrap.sh does it)"
    if in_ci():
        pytest.fail(f"CI must run the browser tests: {message}")
    pytest.skip(message)


def spki_pin(cert: x509.Certificate) -> str:
    """Base64 SHA-256 of the certificate's SubjectPublicKeyInfo, as --ignore-certificate-errors-spki-list wants."""
    der = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")


def launch_args(trust: Sequence[x509.Certificate] = ()) -> list[str]:
    """Chromium's switches; ``trust``: certificates whose keys may sign for our loopback servers.

    Chromium takes no CA per context (it reads the user's NSS store), and ``ignore_https_errors`` would
    accept any certificate. The SPKI list accepts a chain only when the server presents one of these keys
    (a test CA sent in the chain, or the leaf), so TLS is still checked against the test's own PKI.
    A CA's key counts only when the server sends the CA in its chain (dev_pki.write_chain does); for a
    server that sends its leaf alone, trust the leaf.
    """
    pins = [spki_pin(cert) for cert in trust]
    return [*CHROMIUM_ARGS, *([f"--ignore-certificate-errors-spki-list={','.join(pins)}"] if pins else [])]


@contextmanager
def chromium_browser(trust: Sequence[x509.Certificate] = ()) -> Iterator[Browser]:
    """Playwright and one headless Chromium trusting ``trust``; both stopped when the block ends."""
    from playwright.sync_api import sync_playwright  # dev dependency: imported only where a browser is wanted

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=launch_args(trust))
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Browser, viewport: str | tuple[int, int] = "desktop") -> Page:
    """A page in a new context (own cookies and storage), French locale and Paris time, short timeouts."""
    options = dict(VIEWPORTS[viewport]) if isinstance(viewport, str) else {
        "viewport": {"width": viewport[0], "height": viewport[1]}}
    context = browser.new_context(locale="fr-FR", timezone_id="Europe/Paris", ignore_https_errors=False, **options)
    context.set_default_timeout(TIMEOUT_MS)
    return context.new_page()


def page_problems(page: Page) -> list[str]:
    """A live list of the page's console errors (CSP violations among them) and uncaught exceptions."""
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    return problems


def horizontal_overflow(page: Page) -> int:
    """How many CSS pixels the document is wider than the viewport (0: nothing to scroll sideways)."""
    return int(page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth"))


@dataclass(frozen=True)
class BrowserPki:
    """A test CA and a loopback server certificate written to disk."""

    ca: dev_pki.Authority
    cert: Path  # leaf then CA, as the server sends it
    key: Path
    ca_file: Path

    def server_ssl(self) -> ssl.SSLContext:
        """The server side TLS context (no client certificate asked: a browser has none)."""
        return server_context(self.cert, self.key, self.ca_file, client_cert=False)


def make_browser_pki(folder: Path) -> BrowserPki:
    """Write a CA and a 127.0.0.1/localhost certificate into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = dev_pki.make_ca("AC NAVIGATEUR TEST", "Test")
    leaf = dev_pki.issue(ca, cn="localhost", ou="WEB", org="Test", st="Paris (75)", dns_names=["localhost"],
                         ip_addresses=["127.0.0.1"], client=False)
    dev_pki.write_chain(folder / "web.pem", leaf.chain)
    dev_pki.write_key(folder / "web.key", leaf.key)
    dev_pki.write_chain(folder / "ca.pem", [ca.cert])
    return BrowserPki(ca, folder / "web.pem", folder / "web.key", folder / "ca.pem")


@contextmanager
def serving(app: web.Application, ssl_context: ssl.SSLContext) -> Iterator[str]:
    """Serve ``app`` over HTTPS on 127.0.0.1 (port chosen by the system) from a thread with its own loop.

    Playwright's sync API owns the test thread's event loop, so the server must run elsewhere.
    Yields the base URL, e.g. ``https://127.0.0.1:40123``; an application can be served only once.
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="browser-server", daemon=True)
    thread.start()
    runner = web.AppRunner(app, access_log=None)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        return runner.addresses[0][1]  # port 0: the one the system chose

    try:
        port = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
        yield f"https://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


@pytest.fixture(scope="session")
def browser_pki(tmp_path_factory: pytest.TempPathFactory) -> BrowserPki:
    """Certificates for the HTTPS servers the browser visits (one set for the whole run)."""
    return make_browser_pki(tmp_path_factory.mktemp("browser-pki"))


@pytest.fixture(scope="module")
def browser_trust(browser_pki: BrowserPki) -> list[x509.Certificate]:
    """Certificates whose keys Chromium accepts; override in a module whose server uses another CA."""
    return [browser_pki.ca.cert]


@pytest.fixture(scope="module")
def chromium(browser_trust: list[x509.Certificate]) -> Iterator[Browser]:
    """One headless Chromium for the module (skipped, or failed in CI, when it is not installed)."""
    require_chromium()
    with chromium_browser(browser_trust) as browser:
        yield browser


@pytest.fixture
def new_page(chromium: Browser) -> Iterator[Callable[..., Page]]:
    """Factory: ``new_page("phone")`` -> a Page in a fresh context; contexts closed after the test."""
    contexts: list[BrowserContext] = []

    def make(viewport: str | tuple[int, int] = "desktop") -> Page:
        page = open_page(chromium, viewport)
        contexts.append(page.context)
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def browser_page(new_page: Callable[..., Page]) -> Page:
    """A desktop-sized page (1280x800) in a fresh context."""
    return new_page("desktop")


@pytest.fixture
def phone_page(new_page: Callable[..., Page]) -> Page:
    """A phone-sized page (360x740, mobile viewport meta honoured, touch) in a fresh context."""
    return new_page("phone")
