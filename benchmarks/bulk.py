"""Bulk lab reports end to end: send-bulk -> submission -> DKIM -> queue -> a peer sink over mutual TLS.

Everything runs on this machine as separate processes: the operator (`serve`, its workers), a peer
operator's sink (benchmarks/sink.py with the lab peer's certificate, fsync per message) routed as the
next hop of labo-biolab.mssante.fr, and `mssante-operator send-bulk` submitting a folder of PDF reports
plus its CSV mapping from the APP mailbox (AUTH EXTERNAL with its certificate, pipelined, N connections).

Printed: end-to-end msgs/s (from the start of send-bulk to the last message written by the sink), the
submission rate alone, queue latency (accepted -> delivered, from the queue's own timestamps) p50/p99,
and the operator's peak RSS (all its processes).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from process_tree import ServerMemory

from mssante_operator.config import load_settings
from mssante_operator.demo_kit import create_kit, free_ports
from mssante_operator.store.facade import Store

ROOT = Path(__file__).resolve().parent.parent
APP = "labo-auto@hopital-demo.mssante.fr"
LAB = "labo-biolab.mssante.fr"


def _reports(folder: Path, count: int, size: int) -> None:
    """``count`` PDF files whose composed message is about ``size`` bytes, and mapping.csv."""
    folder.mkdir()
    pdf_size = size * 3 // 4 - 1500  # base64 grows by 4/3; headers and text part take ~1.5 KB
    filler = os.urandom(pdf_size)
    lines = ["file;recipient;subject"]
    for index in range(count):
        name = f"CR-{index:06d}.pdf"
        (folder / name).write_bytes(b"%PDF-1.4\n%" + index.to_bytes(4, "big") + filler)
        lines.append(f"{name};resultats@{LAB};Compte rendu de biologie {index}")
    (folder / "mapping.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _configure(home: Path, sink_port: int, workers: int) -> None:
    config = home / "config.toml"
    text = config.read_text()
    text = text.replace("[outbound.routes]\n", f'[outbound.routes]\n"{LAB}" = "127.0.0.1:{sink_port}"\n')
    if workers:
        text += f"\n[server]\nworkers = {workers}\n"
    config.write_text(text)
    assert load_settings(home).outbound.routes == {LAB: f"127.0.0.1:{sink_port}"}


def _wait_for_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _queue_latencies(home: Path) -> tuple[list[float], dict[str, int]]:
    """Seconds from acceptance to delivery per recipient, and the count per status."""
    settings = load_settings(home)
    store = Store(settings.database_url, settings.path(settings.storage.blob_dir))
    try:
        entries = store.queue.entries(limit=10**7)
    finally:
        store.close()
    latencies, statuses = [], {}
    for entry in entries:
        for recipient in entry.recipients:
            statuses[recipient.status.value] = statuses.get(recipient.status.value, 0) + 1
            if recipient.status.value == "delivered" and recipient.last_attempt_at is not None:
                latencies.append((recipient.last_attempt_at - entry.created_at).total_seconds())
    return latencies, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=50_000, help="bytes per composed message")
    parser.add_argument("--connections", type=int, default=16, help="send-bulk connections")
    parser.add_argument("--workers", type=int, default=0, help="[server] workers (0: one per CPU)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mss-bulk-") as tmp:
        home = Path(tmp) / "kit"
        manifest = create_kit(home)
        app = next(m for m in manifest["mailboxes"] if m["address"] == APP)
        lab = next(p for p in manifest["peers"] if p["name"] == "labo")
        sink_port = free_ports(1)[0]
        _configure(home, sink_port, args.workers)
        folder = Path(tmp) / "reports"
        print(f"writing {args.count} reports of ~{args.size} bytes ...", flush=True)
        _reports(folder, args.count, args.size)
        sink_dir = Path(tmp) / "sink"
        sink_dir.mkdir()

        logs = [(Path(tmp) / name).open("wb") for name in ("sink.log", "operator.log")]
        sink = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "sink.py"), str(home), str(sink_port),
                                 str(sink_dir), lab["cert"], lab["key"], "fast"],
                                stdout=logs[0], stderr=subprocess.STDOUT)
        operator = subprocess.Popen([sys.executable, "-m", "mssante_operator.cli", "--log-level", "WARNING", "serve",
                                     "--home", str(home)], stdout=logs[1], stderr=subprocess.STDOUT)
        try:
            port = int(manifest["listeners"]["submissions"]["port"])
            _wait_for_port(sink_port)
            _wait_for_port(port)
            time.sleep(2)  # every worker at accept()
            memory = ServerMemory(operator.pid)
            spy = None
            if os.environ.get("BENCH_PYSPY"):  # a flame graph of the operator's processes
                spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--gil", "-o",
                                        os.environ["BENCH_PYSPY"], "-f", "raw", "--subprocesses", "-p",
                                        str(operator.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cpu_before = memory.cpu_split()
            sink_cpu = ServerMemory(sink.pid)
            sink_before = sink_cpu.cpu_seconds()
            children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            machine_before = psutil.cpu_times()
            started = time.monotonic()
            bulk = subprocess.run(
                [sys.executable, "-m", "mssante_operator.cli", "send-bulk", str(folder), "--server",
                 f"127.0.0.1:{port}", "--tls", "implicit", "--cert", str(home / app["cert"]), "--key",
                 str(home / app["key"]), "--ca", str(home / manifest["trust_ca"]), "--from", APP,
                 "--mapping", str(folder / "mapping.csv"), "--connections", str(args.connections), "--no-progress"],
                capture_output=True, text=True,
            )
            submitted = time.monotonic() - started
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            client_cpu = (children.ru_utime + children.ru_stime - children_before.ru_utime - children_before.ru_stime)
            print(bulk.stdout.strip() or bulk.stderr.strip()[-2000:], flush=True)
            deadline = time.monotonic() + 600
            while (delivered := sum(1 for _ in sink_dir.iterdir())) < args.count and time.monotonic() < deadline:
                time.sleep(0.05)
            end_to_end = time.monotonic() - started
            user, system = (after - before for after, before in zip(memory.cpu_split(), cpu_before, strict=True))
            machine = psutil.cpu_times()
            busy = 1 - (machine.idle - machine_before.idle) / (sum(machine) - sum(machine_before))
            sink_used = sink_cpu.cpu_seconds() - sink_before
            memory.stop()
            sink_cpu.stop()
            if spy is not None:
                spy.send_signal(2)
                spy.wait(60)
        finally:
            for process in (operator, sink):
                process.terminate()
                process.wait(60)
            for log in logs:
                log.close()
        latencies, statuses = _queue_latencies(home)

    ordered = sorted(latencies)
    result = {
        "messages": args.count,
        "delivered_to_peer": delivered,
        "send_bulk_exit": bulk.returncode,
        "end_to_end_s": round(end_to_end, 2),
        "end_to_end_msgs_per_s": round(delivered / end_to_end, 1),
        "submission_msgs_per_s": round(args.count / submitted, 1),
        "queue_latency_p50_s": round(statistics.median(ordered), 3) if ordered else None,
        "queue_latency_p99_s": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 3) if ordered else None,
        "operator_peak_rss_mb": round(memory.peak / 2**20, 1),
        "operator_cpu_ms_per_msg": round((user + system) * 1000 / max(delivered, 1), 2),
        "operator_system_cpu_ms_per_msg": round(system * 1000 / max(delivered, 1), 2),
        "send_bulk_cpu_ms_per_msg": round(client_cpu * 1000 / max(delivered, 1), 2),
        "sink_cpu_ms_per_msg": round(sink_used * 1000 / max(delivered, 1), 2),
        "machine_busy_pct": round(busy * 100, 1),
        "queue_statuses": statuses,
        "cpus": os.cpu_count(),
    }
    print(f"\nsend-bulk of {args.count} DKIM-signed reports of ~{args.size} bytes, {args.connections} connections, "
          "mutual TLS both ways")
    print(f"end to end: {result['end_to_end_msgs_per_s']} msgs/s ({delivered} delivered in {result['end_to_end_s']} s;"
          " target >= 250)")
    print(f"submission alone: {result['submission_msgs_per_s']} msgs/s")
    print(f"queue latency (accepted -> delivered): p50 {result['queue_latency_p50_s']} s, "
          f"p99 {result['queue_latency_p99_s']} s")
    print(f"operator peak RSS {result['operator_peak_rss_mb']} MB, CPU {result['operator_cpu_ms_per_msg']} ms/msg "
          f"(of which system {result['operator_system_cpu_ms_per_msg']}); send-bulk "
          f"{result['send_bulk_cpu_ms_per_msg']} ms/msg, sink {result['sink_cpu_ms_per_msg']} ms/msg; "
          f"machine busy {result['machine_busy_pct']} %")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
