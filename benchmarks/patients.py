"""Patient-messaging benchmark: doctors' letters to patients through the operator and mes_bridge, and replies.

Runs `mssante-operator serve` (2 workers, mes_bridge as its companion) on a fresh demo kit, then:
1. N letters from dr.martin to the active patient over C submission connections (implicit TLS, AUTH
   PLAIN): each RCPT asks the registry (cached), each message opens the conversation in the same
   transaction, the queue hands it to the bridge over LMTP. Prints msgs/s accepted, msgs/s landed in
   the patient's space, and the hand-off latency (250 at submission → row committed by the bridge).
2. R replies from the patient (mes_bridge's client, AUTH EXTERNAL, the conversation rule at RCPT).

    .venv/bin/python benchmarks/patients.py [--messages 1000] [--connections 8] [--replies 200]
"""

from __future__ import annotations

import argparse
import asyncio
import smtplib
import ssl
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from process_tree import ServerMemory  # noqa: E402
from support.harness import configure, make_kit, serve_process, wait_for_port  # noqa: E402

from mes_bridge.outgoing import send_patient_message  # noqa: E402
from mes_bridge.service import open_store  # noqa: E402
from mes_bridge.settings import load_bridge_settings  # noqa: E402
from mssante_base.patients.ins import validate_ins  # noqa: E402


def _letter(sender: str, patient: str, size: int) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, patient, "Compte rendu de consultation"
    msg["Message-ID"] = make_msgid(domain="hopital-demo.mssante.fr")
    msg.set_content("Bonjour,\n" + "Compte rendu.\n" * (size // 14))
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--replies", type=int, default=200)
    parser.add_argument("--size", type=int, default=20_000)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-patients-")) / "home"
    manifest = make_kit(home)
    configure(home, server={"workers": 2})
    doctor = next(m for m in manifest["mailboxes"] if m["address"].startswith("dr.martin@"))
    patient = next(p for p in manifest["patients"] if p["state"] == "active")
    ins = validate_ins(patient["ins"])
    context = ssl.create_default_context(cafile=str(home / manifest["trust_ca"]))
    context.check_hostname = False
    port = manifest["listeners"]["submissions"]["port"]
    messages = [_letter(doctor["address"], patient["address"], args.size) for _ in range(args.messages)]
    accepted_at: dict[str, float] = {}
    lock = threading.Lock()

    def sender(chunk: list[bytes]) -> None:
        with smtplib.SMTP_SSL("127.0.0.1", port, context=context, timeout=60) as client:
            client.login(doctor["address"], doctor["password"])
            for raw in chunk:
                client.sendmail(doctor["address"], [patient["address"]], raw)
                message_id = raw.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
                with lock:
                    accepted_at[message_id] = time.time()

    with serve_process(home, manifest) as server:
        for name in ("bridge_lmtp", "bridge_registry"):
            wait_for_port("127.0.0.1", manifest["listeners"][name]["port"])
        memory = ServerMemory(server.pid)
        bridge_settings = load_bridge_settings(home)
        store = open_store(bridge_settings)
        chunks = [messages[i::args.connections] for i in range(args.connections)]
        start = time.time()
        threads = [threading.Thread(target=sender, args=(chunk,)) for chunk in chunks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        submitted = time.time()
        while len(landed := store.messages(ins)) < args.messages:
            time.sleep(0.2)
        done = time.time()
        latencies = sorted(m.at.replace(tzinfo=m.at.tzinfo or UTC).timestamp() - accepted_at[m.message_id]
                           for m in landed if m.message_id in accepted_at)
        print(f"letters: {args.messages} x {args.size // 1000} KB over {args.connections} connections")
        print(f"  accepted by the operator: {args.messages / (submitted - start):.1f} msgs/s")
        print(f"  landed in the patient's space: {args.messages / (done - start):.1f} msgs/s end to end")
        print(f"  hand-off latency (250 -> bridge commit): p50 {statistics.median(latencies) * 1000:.0f} ms, "
              f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.0f} ms")

        async def replies() -> list[float]:
            timings: list[float] = []
            semaphore = asyncio.Semaphore(args.connections)

            async def one() -> None:
                async with semaphore:
                    began = time.perf_counter()
                    outcome = await send_patient_message(bridge_settings, ins=ins, to=[doctor["address"]],
                                                         subject="Re: compte rendu", body="Merci.", store=store)
                    assert outcome.accepted, outcome.refused
                    timings.append(time.perf_counter() - began)

            began = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(args.replies)))
            timings.append(time.perf_counter() - began)
            return timings

        timings = asyncio.run(replies())
        total = timings.pop()
        timings.sort()
        print(f"replies: {args.replies} through mes_bridge (connection + AUTH EXTERNAL + conversation rule each)")
        print(f"  {args.replies / total:.1f} replies/s, p50 {statistics.median(timings) * 1000:.0f} ms, "
              f"p99 {timings[int(len(timings) * 0.99) - 1] * 1000:.0f} ms")
        print(f"operator peak RSS (supervisor, workers, bridge): {memory.peak / 2**20:.0f} MB")
        store.close()
    print(f"at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")


if __name__ == "__main__":
    main()
