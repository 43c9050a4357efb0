"""The floor: a bare aiosmtpd server that only writes each message to a file and fsyncs it.

Same TLS as the operator (STARTTLS, client certificate requested and chain-checked), no policy,
no DKIM, no database. Run as a separate process by benchmarks/ingress.py (as the operator's floor) and by
benchmarks/bulk.py (as the peer operator receiving the reports; then with a peer's certificate, argv[4:6]).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path

from aiosmtpd.smtp import SMTP

from mssante_base.connection_limits import ConnectionLimiter
from mssante_base.settings import LimitsSettings
from mssante_base.smtp.server import GuardedSMTP
from mssante_base.trust.tls import server_context


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


async def main(home: Path, port: int, directory: Path, cert: str = "certs/operator.pem",
               key: str = "certs/operator.key", reader: str = "aiosmtpd") -> None:
    context = server_context(home / cert, home / key, home / "certs/trust-ca.pem")
    loop = asyncio.get_running_loop()
    handler = FsyncSink(directory)
    limits = LimitsSettings(max_message_size=50 * 1024 * 1024, max_connections=10_000, max_connections_per_ip=10_000)
    limiter = ConnectionLimiter(limits.max_connections, limits.max_connections_per_ip)

    def session() -> SMTP:
        if reader == "fast":
            # GuardedSMTP's one-search DATA reader: plain aiosmtpd reads line by line in Python, which would make
            # the sink, not the operator, the bottleneck of a benchmark whose processes share two cores (bulk.py).
            return GuardedSMTP(handler, limits=limits, limiter=limiter, hostname="sink.test", tls_context=context,
                               require_starttls=True, loop=loop)
        return SMTP(handler, tls_context=context, require_starttls=True, enable_SMTPUTF8=True,
                    data_size_limit=limits.max_message_size, loop=loop)

    server = await loop.create_server(session, "127.0.0.1", port)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("sink ready", flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), *sys.argv[4:7]))
