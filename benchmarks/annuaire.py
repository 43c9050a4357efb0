"""Annuaire benchmark: import a generated 100,000-row extraction, then look mailboxes up.

Imports run `mssante-operator annuaire import` as a child process, into the file backend and into
a throwaway slapd (the test suite's, with the shipped schema), and report rows/s and the peak RSS
of the importer with its writer processes. Lookups go through the server's annuaire objects: cold (every question goes
to slapd, no cache) and cached (the same addresses again), with lookups/s and p99.

    .venv/bin/python benchmarks/annuaire.py [--rows 100000] [--lookups 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.extraction_data import generated_rows, write_extraction  # noqa: E402
from support.harness import make_kit  # noqa: E402
from support.slapd import start_slapd  # noqa: E402

from mssante_base.annuaire.cache import CachedAnnuaire  # noqa: E402
from mssante_base.annuaire.ldap_backend import LdapAnnuaire, LdapDirectory, LdapOptions  # noqa: E402
from mssante_operator.config import load_settings  # noqa: E402


def run_import(home: Path, file: Path) -> dict[str, float | str]:
    """One import as a child process: seconds, rows/s, the child's peak RSS and its summary line."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "mssante_operator.cli", "--log-level", "WARNING", "annuaire", "import", str(file),
         "--home", str(home), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    process, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        with contextlib.suppress(psutil.Error):  # the importer and its writer processes
            tree = [process, *process.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    out, err = child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"import failed: {err}")
    return {"seconds": round(seconds, 2), "summary": out.strip(), "peak_rss_mb": round(peak / 2**20, 1)}


async def time_lookups(annuaire: object, addresses: list[str], concurrency: int = 8) -> dict[str, float]:
    """Look every address up with ``concurrency`` questions in flight; lookups/s and latency percentiles."""
    latencies: list[float] = []
    queue = list(addresses)

    async def worker() -> None:
        while queue:
            address = queue.pop()
            started = time.perf_counter()
            entry = await annuaire.lookup(address)  # type: ignore[attr-defined]
            latencies.append(time.perf_counter() - started)
            assert entry is not None, address

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    latencies.sort()
    return {
        "lookups_per_s": round(len(addresses) / seconds),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
    }


def sample_addresses(file: Path, count: int) -> list[str]:
    with file.open(encoding="utf-8") as handle:
        next(handle)
        addresses = [line.split("|", 2)[1].lower() for line in handle]
    return random.Random(7).sample(addresses, count)


async def lookups(home: Path, addresses: list[str]) -> dict[str, dict[str, float]]:
    settings = load_settings(home)
    cold = LdapAnnuaire(LdapDirectory(LdapOptions.from_settings(settings.annuaire, settings.home)))
    options = LdapOptions.from_settings(settings.annuaire, settings.home)
    cached = CachedAnnuaire(LdapAnnuaire(LdapDirectory(options)), size=len(addresses))
    try:
        result = {"cold": await time_lookups(cold, addresses)}
        await time_lookups(cached, addresses)  # fill the cache
        result["cached"] = await time_lookups(cached, addresses)
        return result
    finally:
        await cold.close()
        await cached.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=5_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mss-annuaire-bench-") as tmp:
        work = Path(tmp)
        file = write_extraction(work / "extraction.txt", generated_rows(args.rows))
        print(f"extraction: {args.rows} rows, {file.stat().st_size / 2**20:.1f} MB", flush=True)
        results: dict[str, object] = {"rows": args.rows}

        file_home = work / "file-kit"
        make_kit(file_home)
        results["file_import"] = run_import(file_home, file)
        results["file_reimport"] = run_import(file_home, file)

        server = start_slapd(work / "slapd")
        try:
            ldap_home = work / "ldap-kit"
            make_kit(ldap_home, annuaire={
                "backend": "ldap", "url": server.url, "ca_file": str(server.ca_file), "base_dn": server.base_dn,
                "bind_dn": server.reader_dn, "bind_password": server.reader_password,
                "import_bind_dn": server.admin_dn, "import_bind_password": server.admin_password,
            })
            results["ldap_import"] = run_import(ldap_home, file)
            results["ldap_reimport"] = run_import(ldap_home, file)
            results["lookups"] = asyncio.run(lookups(ldap_home, sample_addresses(file, args.lookups)))
        finally:
            server.stop()

    for name in ("file_import", "file_reimport", "ldap_import", "ldap_reimport"):
        outcome = results[name]
        assert isinstance(outcome, dict)
        outcome["rows_per_s"] = round(args.rows / float(outcome["seconds"]))
        print(f"{name:14} {outcome['rows_per_s']:>8} rows/s  {outcome['seconds']:>7} s  "
              f"peak RSS {outcome['peak_rss_mb']:>6} MB   {outcome['summary']}")
    for name, figures in results["lookups"].items():  # type: ignore[union-attr]
        print(f"lookups {name:6} {figures['lookups_per_s']:>8} /s  "
              f"p50 {figures['p50_ms']} ms  p99 {figures['p99_ms']} ms")
    print("targets: cached lookups >= 20,000/s; import into slapd >= 2,000 rows/s "
          f"(cpus: {os.cpu_count()})")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
