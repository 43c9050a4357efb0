"""The store's layers, read from the source: every change to mail goes through the write unit, the parts
under the facade do not import it, and nobody imports the store's private names."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "mssante_operator").is_dir())  # any depth
STORE = ROOT / "mssante_operator" / "store"
# Each module may import these store modules, and no other (the layers, bottom up).
LAYERS = {
    "models": set(),
    "blob_refs": {"models"},
    "write_unit": {"models", "blob_refs"},
    "database": {"models", "write_unit"},
    "folder_index": set(),
    "folders": {"models", "database", "write_unit", "folder_index"},
    "queue": {"models", "blob_refs", "database", "write_unit"},
    "conversations": {"models", "database", "write_unit"},
    "accounts": {"models", "database", "write_unit"},
    "facade": {"models", "accounts", "conversations", "database", "folders", "queue", "write_unit"},
    "submission": {"models", "facade", "queue", "write_unit"},
    "notifications": {"facade", "write_unit"},
}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every ``from … import …`` in a file, wherever it stands (functions, TYPE_CHECKING)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found.append((module, [alias.name for alias in node.names]))
    return found


def _store_module(module: str) -> str | None:
    """The store module an import names (``.folders``, ``mssante_operator.store.folders``), else None."""
    for prefix in ("mssante_operator.store.", "."):
        if module.startswith(prefix) and module.count(".") == prefix.count("."):
            return module[len(prefix):]
    return None


def test_each_store_module_imports_only_the_layers_below_it() -> None:
    wrong = {}
    for name, allowed in LAYERS.items():
        used = {_store_module(module) for module, _ in _imports(STORE / f"{name}.py")} - {None}
        if used - allowed:
            wrong[name] = sorted(used - allowed)  # type: ignore[type-var]
    assert wrong == {}


def test_every_store_module_has_its_layer() -> None:
    assert {path.stem for path in STORE.glob("*.py")} - {"__init__"} == set(LAYERS)


def _absolute(path: Path, module: str) -> str:
    """The absolute name of a module imported from ``path`` (relative imports resolved)."""
    level = len(module) - len(module.lstrip("."))
    if not level:
        return module
    package = list(path.relative_to(ROOT).parent.parts)
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, module[level:]] if module[level:] else base)


def test_nobody_imports_a_private_name_of_the_store() -> None:
    offenders = []
    for path in [*ROOT.glob("mssante_operator/**/*.py"), *ROOT.glob("mes_bridge/**/*.py"), *ROOT.glob("tests/**/*.py")]:
        for module, names in _imports(path):
            if _absolute(path, module).startswith("mssante_operator.store"):
                offenders += [f"{path.relative_to(ROOT)}: {name}" for name in names if name.startswith("_")]
    assert offenders == []
