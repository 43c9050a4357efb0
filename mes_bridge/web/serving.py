"""Serving a document's or an attachment's bytes without letting them act as part of the site.

The type is the one detected from the content (never the sender's name or Content-Type). Only types a
browser shows without running anything (SAFE_INLINE: PDF, PNG, JPEG, plain text) may open in the
browser; everything else (HTML, SVG, XML, archives…) is a download of application/octet-stream. All of
it carries ``Content-Security-Policy: sandbox`` and nosniff, so even a mislabelled file opened
directly gets no script, no forms and no access to the site's origin.
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from ..filing.filetypes import SAFE_INLINE, safe_filename
from .security import CONTENT_CSP


def content_response(data: bytes, detected_type: str, filename: str | None, *, download: bool,
                     fallback: str) -> web.Response:
    """The bytes as their detected type inline when safe and asked for, else as an opaque download."""
    inline = detected_type in SAFE_INLINE and not download
    content_type = detected_type if detected_type in SAFE_INLINE else "application/octet-stream"
    name = safe_filename(filename, fallback)
    ascii_name = name.encode("ascii", "replace").decode().replace("?", "_")
    disposition = f"{'inline' if inline else 'attachment'}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
    headers = {"Content-Disposition": disposition, "Content-Security-Policy": CONTENT_CSP}
    response = web.Response(body=data, headers=headers)
    response.content_type = content_type
    if content_type == "text/plain":
        response.charset = "utf-8"
    return response
