"""« Télécharger toutes mes données »: the page that says what the export holds, and the download itself.

The ZIP is built in a thread onto an unnamed temporary file (never in the event loop, never whole in
memory), for what the reader may see (``audience_of``), audited as done by ``actor_of``; aiohttp then
streams the file in chunks read in its executor, and closes (so removes) it once sent.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import date
from typing import IO

from aiohttp import web

from ..export import ExportRefused, ExportSummary, write_export
from ..store import Audience, BridgeStore
from .context import WEB
from .pages import actor_of, audience_of, ins_of, render, viewer_of

log = logging.getLogger(__name__)


async def page(request: web.Request) -> web.Response:
    return await render(request, "export.html", nav="export")


def _build(store: BridgeStore, ins: str, audience: Audience, actor: str,
           viewer: str) -> tuple[IO[bytes], ExportSummary]:
    """The archive on a temporary file, rewound; the file is closed (and gone) if building fails."""
    file = tempfile.TemporaryFile(prefix="mes-export-")  # noqa: SIM115 - handed to the response, which closes it
    try:
        summary = write_export(store, ins, audience, file, actor=actor, viewer=viewer)
        file.seek(0)
    except BaseException:
        file.close()
        raise
    return file, summary


async def download(request: web.Request) -> web.Response:
    context, ins = request.app[WEB], ins_of(request)
    try:
        file, summary = await context.call(_build, context.store, ins, audience_of(request), actor_of(request),
                                          viewer_of(request))
    except ExportRefused:  # deleted meanwhile: the guard ends the session at the next request
        raise web.HTTPNotFound() from None
    log.info("web export messages=%d documents=%d", summary.messages, summary.documents)
    name = f"mes-donnees-mon-espace-sante-{date.today().isoformat()}.zip"
    return web.Response(body=file, content_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
