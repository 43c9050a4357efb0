"""The layers between the packages, read from the source: both services stand on mssante_base, which imports
neither; mes_bridge does not import the operator; the operator knows mes_bridge in one wiring module;
the IMAP server and the patients' code do not import the SMTP listeners; no package takes another's
private names."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "mssante_operator").is_dir())  # any depth
PACKAGES = ("mssante_base", "mssante_operator", "mes_bridge")
BRIDGE_WIRING = "mssante_operator/bridge.py"  # the operator's one module that imports mes_bridge
NOT_SMTP = ("mssante_operator/imap/", "mssante_operator/patients/")  # import nothing from mssante_operator.smtp


def _module_of(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path = ROOT) -> Iterator[tuple[int, str, list[str]]]:
    """(line, absolute module, names) of every import in a file, wherever it stands (functions,
    TYPE_CHECKING); relative imports resolved; ``import a.b`` gives ("a.b", [])."""
    package = _module_of(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module, [alias.name for alias in node.names]


def _sources() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), path


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _offences(rule: object) -> list[str]:
    wrong = []
    for name, path in _sources():
        for line, module, names in _imports(path):
            why = rule(name, module, names)  # type: ignore[operator]
            if why:
                wrong.append(f"{name}:{line} imports {module} ({why})")
    return wrong


def test_the_base_imports_neither_service() -> None:
    def rule(name: str, module: str, _names: list[str]) -> str | None:
        if name.startswith("mssante_base/") and (_within(module, "mssante_operator") or _within(module, "mes_bridge")):
            return "mssante_base stands under both services and imports neither"
        return None

    assert _offences(rule) == []


def test_mes_bridge_does_not_import_the_operator() -> None:
    def rule(name: str, module: str, _names: list[str]) -> str | None:
        if name.startswith("mes_bridge/") and _within(module, "mssante_operator"):
            return "what both services need belongs in mssante_base"
        return None

    assert _offences(rule) == []


def test_the_operator_knows_mes_bridge_in_one_wiring_module() -> None:
    def rule(name: str, module: str, _names: list[str]) -> str | None:
        if name.startswith("mssante_operator/") and name != BRIDGE_WIRING and _within(module, "mes_bridge"):
            return f"only {BRIDGE_WIRING} imports mes_bridge"
        return None

    assert _offences(rule) == []


def test_imap_and_patients_do_not_import_the_smtp_listeners() -> None:
    def rule(name: str, module: str, names: list[str]) -> str | None:
        smtp = _within(module, "mssante_operator.smtp") or (module == "mssante_operator" and "smtp" in names)
        if name.startswith(NOT_SMTP) and smtp:
            return "shared message code belongs in mssante_base"
        return None

    assert _offences(rule) == []


def test_no_package_imports_another_packages_private_names() -> None:
    def rule(name: str, module: str, names: list[str]) -> str | None:
        own = name.split("/")[0]
        other = next((p for p in PACKAGES if _within(module, p)), None)
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        private += [part for part in module.split(".") if part.startswith("_") and not part.startswith("__")]
        if other and other != own and private:
            return f"private {', '.join(private)}: make it public where it is defined"
        return None

    assert _offences(rule) == []


def test_the_rules_see_an_offending_import(tmp_path: Path) -> None:
    """The reader resolves relative imports, so a relative import across the line is caught too."""
    source = tmp_path / "mes_bridge" / "store" / "x.py"
    source.parent.mkdir(parents=True)
    source.write_text("from ...mssante_operator.store import facade\nimport mssante_operator.smtp.mta\n")
    found = [module for _, module, _ in _imports(source, tmp_path)]
    assert found == ["mssante_operator.store", "mssante_operator.smtp.mta"]
