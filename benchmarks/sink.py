"""The floor: a bare aiosmtpd server that only writes each message to a file and fsyncs it.

Same TLS as the operator (STARTTLS, client certificate requested and chain-checked), no policy,
no DKIM, no database. Run by benchmarks/ingress.py as a separate process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path

from aiosmtpd.smtp import SMTP

from mssante_operator.trust_space.tls import server_context


class FsyncSink:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def handle_DATA(self, server: SMTP, session: object, envelope: object) -> str:
        path = self.directory / uuid.uuid4().hex
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, envelope.original_content)  # type: ignore[attr-defined]
            os.fsync(fd)
        finally:
            os.close(fd)
        return "250 OK"


async def main(home: Path, port: int, directory: Path) -> None:
    context = server_context(home / "certs/operator.pem", home / "certs/operator.key", home / "certs/trust-ca.pem")
    loop = asyncio.get_running_loop()
    handler = FsyncSink(directory)
    server = await loop.create_server(
        lambda: SMTP(handler, tls_context=context, require_starttls=True, enable_SMTPUTF8=True,
                     data_size_limit=50 * 1024 * 1024, loop=loop),
        "127.0.0.1", port,
    )
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("sink ready", flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])))
