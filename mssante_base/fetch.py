"""Bounded downloads and atomic file replacement, for files the services keep up to date from a URL.

A download has a size cap and an overall deadline (a server that trickles bytes cannot hold a worker),
and refuses a redirect to plain http when https was asked. A file is replaced by a complete,
fsync'd temporary file renamed over it, so a reader (another worker, mes_bridge) never sees half of it.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

CHUNK = 64 * 1024


def shown_url(url: str) -> str:
    """A URL fit for a log line: scheme, host, port and path; no user, password nor query (tokens)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def http_get(url: str, *, timeout: float, max_bytes: int, tls: ssl.SSLContext | None = None,
             accept: str = "*/*") -> bytes:
    """The body of a 200 answer to GET ``url``; raises OSError saying why (network, HTTP status, size, time)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise OSError(f"{shown_url(url)} is not an http(s) URL")
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=tls))
    request = urllib.request.Request(url, headers={"Accept": accept})  # noqa: S310 - scheme checked above
    deadline = time.monotonic() + timeout
    try:
        with opener.open(request, timeout=timeout) as response:
            if parsed.scheme == "https" and urllib.parse.urlsplit(response.geturl()).scheme != "https":
                raise OSError("redirected to a plain http URL")
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise OSError(f"larger than {max_bytes} bytes ({length})")
            chunks: list[bytes] = []
            size = 0
            while chunk := response.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise OSError(f"larger than {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise OSError(f"not received within {timeout:g} s")
                chunks.append(chunk)
    except urllib.error.HTTPError as exc:
        raise OSError(f"HTTP {exc.code}") from exc
    except urllib.error.URLError as exc:
        raise OSError(str(exc.reason)) from exc
    except (http.client.HTTPException, ssl.SSLError, TimeoutError) as exc:
        raise OSError(str(exc) or type(exc).__name__) from exc
    return b"".join(chunks)


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` by ``data``: a temporary file in the same folder, fsync, rename over, fsync the folder."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
