"""Ingress benchmark: N peer sessions over mutual TLS, each sending M DKIM-signed lab reports.

Runs the real operator (`mssante-operator serve`, as its own process) on a fresh demo kit, then a
bare aiosmtpd sink that only fsyncs the bytes, under the same load, and prints msgs/s, latency
percentiles and the server's peak RSS for both. Messages are signed before the clock starts so the
load generator measures the server, not dkimpy.

    .venv/bin/python benchmarks/ingress.py [--sessions 20] [--messages 100] [--size 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from process_tree import ServerMemory  # noqa: E402
from support.harness import DOCTOR, lab_report, signed, wait_for_port  # noqa: E402

from mssante_operator.demo_kit import create_kit, free_ports  # noqa: E402


def _make_messages(home: Path, labo: dict, session: int, count: int, size: int) -> list[bytes]:
    return [
        signed(home, labo, lab_report(labo["sender"], [DOCTOR], size=size,
                                      message_id=f"<bench.s{session}.m{n}.{time.time_ns()}@{labo['domain']}>"))
        for n in range(count)
    ]


class _Client:
    """A lean SMTP client: pipelined envelope, pre-stuffed data, so the generator costs little CPU."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def reply(self) -> str:
        while True:
            line = (await self.reader.readline()).decode()
            if not line:
                raise ConnectionError("server closed the connection")
            if line[3:4] != "-":
                return line.strip()

    async def command(self, line: str, expect: str) -> None:
        self.writer.write(line.encode() + b"\r\n")
        reply = await self.reply()
        if not reply.startswith(expect):
            raise RuntimeError(f"{line!r} -> {reply!r}")


def _stuffed(raw: bytes) -> bytes:
    """DATA payload: dot-stuffed, terminated."""
    return raw.replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\n"


async def _session(port: int, context: ssl.SSLContext, sender: str, messages: list[bytes],
                   latencies: list[float]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = _Client(reader, writer)
    await client.reply()
    await client.command("EHLO bench.test", "250")
    await client.command("STARTTLS", "220")
    await writer.start_tls(context)
    await client.command("EHLO bench.test", "250")
    refused = 0
    for raw in messages:
        started = time.perf_counter()
        writer.write(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{DOCTOR}>\r\nDATA\r\n".encode())
        replies = [await client.reply() for _ in range(3)]
        if not replies[2].startswith("354"):
            raise RuntimeError(f"envelope refused: {replies}")
        writer.write(_stuffed(raw))
        final = await client.reply()
        latencies.append(time.perf_counter() - started)
        refused += not final.startswith("250")
    await client.command("QUIT", "221")
    writer.close()
    return refused


async def _load(port: int, context: ssl.SSLContext, sender: str, batches: list[list[bytes]]) -> dict:
    latencies: list[float] = []
    started = time.perf_counter()
    refused = await asyncio.gather(*(_session(port, context, sender, b, latencies) for b in batches))
    elapsed = time.perf_counter() - started
    total = sum(len(b) for b in batches)
    ordered = sorted(latencies)
    return {
        "messages": total,
        "refused": sum(refused),
        "seconds": round(elapsed, 2),
        "msgs_per_s": round(total / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 1),
    }


def _run_server(argv: list[str], port: int, log: Path, load: callable) -> dict:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_port("127.0.0.1", port)
            time.sleep(2)  # let every worker reach accept()
            rss = ServerMemory(process.pid)
            spy = None
            if os.environ.get("BENCH_PYSPY") and "sink" not in argv[1]:
                spy = subprocess.Popen(
                    ["py-spy", "record", "-o", os.environ["BENCH_PYSPY"], "-f", "raw", "-t", "--subprocesses",
                     "-p", str(process.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            cpu_before, client_before = rss.cpu_seconds(), time.process_time()
            result = load()
            per_message = 1000 / result["messages"]
            result["server_cpu_ms_per_msg"] = round((rss.cpu_seconds() - cpu_before) * per_message, 2)
            result["client_cpu_ms_per_msg"] = round((time.process_time() - client_before) * per_message, 2)
            rss.stop()
            result["peak_rss_mb"] = round(rss.peak / 2**20, 1)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=0, help="[server] workers (0: the kit's default)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mss-bench-") as tmp:
        home = Path(tmp) / "kit"
        manifest = create_kit(home)
        if args.workers:
            config = home / "config.toml"
            config.write_text(config.read_text() + f"\n[server]\nworkers = {args.workers}\n")
        labo = next(p for p in manifest["peers"] if p["name"] == "labo")
        context = ssl.create_default_context(cafile=str(home / manifest["trust_ca"]))
        context.check_hostname = False
        context.load_cert_chain(home / labo["cert"], home / labo["key"])

        print(f"signing {args.sessions * args.messages} messages of ~{args.size} bytes ...", flush=True)
        with ProcessPoolExecutor() as pool:
            futures = [pool.submit(_make_messages, home, labo, s, args.messages, args.size)
                       for s in range(args.sessions)]
            batches = [f.result() for f in futures]

        port = int(manifest["listeners"]["mta"]["port"])
        operator = _run_server(
            [sys.executable, "-m", "mssante_operator.cli", "--log-level", "WARNING", "serve", "--home", str(home)],
            port, Path(tmp) / "operator.log",
            lambda: asyncio.run(_load(port, context, labo["sender"], batches)),
        )
        stored = subprocess.run(
            [sys.executable, "-m", "mssante_operator.cli", "mailbox", "ls", DOCTOR, "--home", str(home)],
            capture_output=True, text=True, check=True,
        ).stdout.count("\n")
        operator["stored"] = stored

        sink_port = free_ports(1)[0]
        sink_dir = Path(tmp) / "sink"
        sink_dir.mkdir()
        sink = _run_server(
            [sys.executable, str(ROOT / "benchmarks" / "sink.py"), str(home), str(sink_port), str(sink_dir)],
            sink_port, Path(tmp) / "sink.log",
            lambda: asyncio.run(_load(sink_port, context, labo["sender"], batches)),
        )

    ratio = operator["msgs_per_s"] / sink["msgs_per_s"]
    print(f"\nload: {args.sessions} sessions x {args.messages} messages of {args.size} bytes, mutual TLS, DKIM-signed")
    print(f"{'':10}{'msgs/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'peak RSS MB':>13}{'refused':>9}")
    for name, r in (("operator", operator), ("bare sink", sink)):
        print(f"{name:10}{r['msgs_per_s']:>10}{r['p50_ms']:>10}{r['p99_ms']:>10}{r['peak_rss_mb']:>13}{r['refused']:>9}")
    print(f"operator / sink = {ratio:.2f}   (targets: >= 300 msgs/s and >= 0.6)   stored: {operator['stored']}")
    print(json.dumps({"operator": operator, "sink": sink, "ratio": round(ratio, 3), "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
