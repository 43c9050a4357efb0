"""The dependency locks: bootstrap installs the test environment from requirements-dev.lock (exact versions,
hash-checked), the locks satisfy pyproject.toml, and the suite runs against exactly the locked versions."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", re.MULTILINE)


def pins(lock: str) -> dict[str, str]:
    text = (ROOT / lock).read_text(encoding="utf-8")
    return {canonicalize_name(name): version for name, version in PIN.findall(text)}


def declared(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    found = project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])
    return [Requirement(text) for text in found]


def test_every_pin_carries_its_hashes() -> None:
    for lock in ("requirements.lock", "requirements-dev.lock"):
        text = (ROOT / lock).read_text(encoding="utf-8")
        blocks = re.split(r"\n(?=[A-Za-z0-9_.\-]+==)", text.split("\n\n", 1)[-1])
        for block in blocks:
            if PIN.match(block):
                assert "--hash=sha256:" in block, f"{lock}: {block.splitlines()[0]} has no hash"


def test_the_locks_satisfy_pyproject() -> None:
    runtime, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in runtime, f"{name} is not in requirements.lock: run ./scripts/lock.sh"
        assert requirement.specifier.contains(runtime[name], prereleases=True), f"{name}=={runtime[name]}"
        assert dev[name] == runtime[name], f"{name}: the two locks disagree"
    for requirement in declared("dev"):
        name = canonicalize_name(requirement.name)
        assert name in dev and requirement.specifier.contains(dev[name], prereleases=True), name


def test_the_suite_runs_against_the_lock() -> None:
    for name, version in pins("requirements-dev.lock").items():
        assert metadata.version(name) == version, f"{name}: installed {metadata.version(name)}, locked {version}"


def test_bootstrap_installs_from_the_lock_with_hashes() -> None:
    script = (ROOT / "scripts" / "bootstrap.sh").read_text(encoding="utf-8")
    assert "--require-hashes -r requirements-dev.lock" in script
    assert "--no-deps -e ." in script
    assert "requirements-dev.lock" in script.split("stamp=", 1)[1].split("\n", 1)[0]  # a new lock reinstalls
