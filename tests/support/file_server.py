"""A small HTTP(S) file server on 127.0.0.1 standing for ANS's and IGC-Santé's download points."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mssante_operator.trust_space import dev_pki


class _Handler(BaseHTTPRequestHandler):
    server: _FileServer

    def do_GET(self) -> None:
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files


@dataclass
class FileServers:
    """One https and one plain http server serving the same ``files`` (path -> body, changed by tests)."""

    https_port: int
    http_port: int
    ca_file: Path  # the CA of the https server's certificate
    files: dict[str, bytes] = field(default_factory=dict)

    def https(self, path: str) -> str:
        return f"https://127.0.0.1:{self.https_port}{path}"

    def http(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def client_tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


@contextmanager
def file_servers(folder: Path) -> Iterator[FileServers]:
    """Both servers, the https one with a certificate for 127.0.0.1 from a CA written in ``folder``."""
    ca = dev_pki.make_ca("AC WEB TEST", "WEB TEST")
    issued = dev_pki.issue(ca, cn="127.0.0.1", ou="1", org="WEB", st="Paris (75)", ip_addresses=("127.0.0.1",),
                           client=False)
    dev_pki.write_chain(folder / "web-ca.pem", [ca.cert])
    dev_pki.write_chain(folder / "web.pem", issued.chain)
    dev_pki.write_key(folder / "web.key", issued.key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "web.pem", folder / "web.key")
    files: dict[str, bytes] = {}
    secure, plain = _FileServer(files), _FileServer(files)
    secure.socket = context.wrap_socket(secure.socket, server_side=True)
    threads = [threading.Thread(target=server.serve_forever, daemon=True) for server in (secure, plain)]
    for thread in threads:
        thread.start()
    try:
        yield FileServers(secure.server_address[1], plain.server_address[1], folder / "web-ca.pem", files)
    finally:
        for server in (secure, plain):
            server.shutdown()
            server.server_close()
