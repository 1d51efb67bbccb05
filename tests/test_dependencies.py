"""Every package the code imports is declared in pyproject.toml, and every runtime dependency
declared is imported: an undeclared import works only by luck of what else got installed."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import distribution, packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OWN = {"worker", "tasks", "fixtures"}
NOT_IMPORTED = {
    "openslide-bin": "the OpenSlide library that openslide-python loads",
    "sqlalchemy": "declared for the embedded broker's work, which decides whether it stays",
}


def _declared(names: list[str]) -> set[str]:
    return {_normal(re.split(r"[\s\[<>=!~;]", name, maxsplit=1)[0]) for name in names}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_distributions(folders: list[str]) -> dict[str, str]:
    """Distribution -> a file importing it, for every third-party import under the folders."""
    by_module = packages_distributions()
    found: dict[str, str] = {}
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    # `from google.cloud import storage` imports google.cloud.storage
                    modules = [f"{node.module}.{alias.name}" for alias in node.names]
                else:
                    continue
                for module in modules:
                    for dist in _distributions(module, by_module, path):
                        found.setdefault(dist, str(path.relative_to(ROOT)))
    return found


def _distributions(module: str, by_module: dict[str, list[str]], path: Path) -> list[str]:
    top = module.split(".")[0]
    # Tests and benchmarks import the helper modules of tests/ and bench/ by name.
    scripts = path.parent.name in ("tests", "bench")
    helper = any((ROOT / folder / f"{top}.py").exists() for folder in ("tests", "bench"))
    if top in OWN or top in sys.stdlib_module_names or (scripts and helper):
        return []
    assert top in by_module, f"{path}: {module} is imported but not installed"
    candidates = by_module[top]
    if len(candidates) > 1:  # a namespace shared by several (azure.*, google.*): who owns it
        candidates = [_owner(module, candidates)]
    return [_normal(name) for name in candidates]


def _owner(module: str, candidates: list[str]) -> str:
    """The distribution that installs `module` itself, or the deepest package above it."""
    parts = module.split(".")
    for depth in range(len(parts), 1, -1):
        stem = "/".join(parts[:depth])
        for name in candidates:
            files = distribution(name).files or []
            if any(str(f) in (f"{stem}.py", f"{stem}/__init__.py") for f in files):
                return name
    raise AssertionError(f"no installed distribution provides {module}")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_runtime_imports_and_dependencies_match() -> None:
    declared = _declared(_project()["dependencies"])
    imported = _imported_distributions(["worker", "tasks"])
    assert {d: f for d, f in imported.items() if d not in declared} == {}
    assert declared - set(imported) - set(NOT_IMPORTED) == set()


def test_test_bench_and_fixture_imports_are_declared() -> None:
    project = _project()
    declared = _declared(project["dependencies"] + project["optional-dependencies"]["dev"])
    imported = _imported_distributions(["tests", "bench", "fixtures"])
    assert {d: f for d, f in imported.items() if d not in declared} == {}
