"""A provider is one backend module and one registry entry: nothing outside `worker/storage/` calls
a storage SDK or branches on a provider's name, an unknown provider is a configuration error, and
the docs' tables of providers are the registry's."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from worker.config import settings_from_dict
from worker.errors import ConfigError
from worker.policy import PolicyRequest, build_setup
from worker.storage.base import Storage
from worker.storage.registry import PROVIDERS, backend_class

ROOT = Path(__file__).resolve().parent.parent
STORAGE = ROOT / "worker" / "storage"
SDKS = ("boto3", "botocore", "s3transfer", "azure", "google")
MINIMAL = {
    "local": {"root": "bucket"},
    "aws": {"bucket": "acme-media"},
    "wasabi": {"bucket": "acme-media", "region": "eu-central-2"},
    "s3": {"bucket": "acme-media", "endpoint_url": "https://s3.example.com"},
    "azure": {"bucket": "acmestore", "prefix": "media/data"},
    "gcs": {"bucket": "acme-media"},
}
"""A valid table of each provider (the test below fails when a provider is added without one)."""


def _modules_outside_storage() -> list[Path]:
    files = [*(ROOT / "worker").rglob("*.py"), *(ROOT / "tasks").rglob("*.py")]
    return sorted(p for p in files if STORAGE not in p.parents)


def _imported(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_no_storage_sdk_is_imported_outside_worker_storage() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in _modules_outside_storage()
        for name in _imported(ast.parse(path.read_text(), str(path)))
        if name.split(".")[0] in SDKS
    ]
    assert offenders == []


def _names(node: ast.AST, names: set[str]) -> bool:
    """An attribute of one of `names`, or the string of one (`getattr(view, "_inner")`)."""
    if isinstance(node, ast.Attribute):
        return node.attr in names
    return isinstance(node, ast.Constant) and node.value in names


def _provider_branches(tree: ast.AST) -> list[int]:
    """Lines comparing an integration's `provider` with a name, or unwrapping a read-only view."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            by_name = any(
                (isinstance(s, ast.Attribute) and s.attr == "provider")
                or (isinstance(s, ast.Name) and s.id == "provider")
                for s in sides
            )
            if by_name and any(isinstance(s, ast.Constant | ast.Attribute) for s in sides[1:]):
                lines.append(node.lineno)
        elif _names(node, {"_inner", "is_s3"}):
            lines.append(node.lineno)
    return lines


def test_nothing_outside_worker_storage_branches_on_the_provider() -> None:
    offenders = {
        str(path.relative_to(ROOT)): lines
        for path in _modules_outside_storage()
        if (lines := _provider_branches(ast.parse(path.read_text(), str(path))))
    }
    assert offenders == {}


def test_every_provider_has_a_backend_that_configures_and_prints_its_setup(
    tmp_path: Path,
) -> None:
    assert set(MINIMAL) == set(PROVIDERS)
    tables = {name: {"provider": name, **table} for name, table in MINIMAL.items()}
    settings = settings_from_dict({"integrations": tables}, tmp_path / "mw.toml")
    for name in PROVIDERS:
        backend = backend_class(name)
        assert issubclass(backend, Storage)
        setup = build_setup(PolicyRequest(settings.integration(name)))
        assert setup.provider == name and setup.explanations


def test_an_unknown_provider_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_dict({"integrations": {"acme": {"provider": "dropbox", "bucket": "a"}}})
    assert "integration 'acme'" in str(err.value) and "unknown provider 'dropbox'" in str(err.value)
    assert all(name in str(err.value) for name in PROVIDERS)
    with pytest.raises(ValueError, match="expected one of local, aws"):
        backend_class("dropbox")

    config = tmp_path / "mediaworker.toml"
    config.write_text('[integrations.acme]\nprovider = "dropbox"\nbucket = "acme"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "check", "acme", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "unknown provider 'dropbox'" in line
    assert all(name in line for name in PROVIDERS)


def _table_rows(text: str, heading: str) -> list[list[str]]:
    """The body rows of the first table after `heading`, as cells."""
    rows: list[list[str]] = []
    for line in text.split(heading, 1)[1].splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    return [row for row in rows[1:] if not row[0].startswith("---")]


def test_the_configuration_reference_lists_the_registry_s_providers() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    rows = _table_rows(text, "### Providers")
    assert [row[0] for row in rows] == [f"`{name}`" for name in PROVIDERS]
    assert ", ".join(f"`{name}`" for name in PROVIDERS) + " |" in text  # the `provider` field
    for row, entry in zip(rows, PROVIDERS.values(), strict=True):
        assert row[1] == entry.what
        module, _, cls = entry.backend.partition(":")
        assert row[2] == f"`{cls}` (`{module.replace('.', '/')}.py`)"


def test_the_readme_s_provider_lists_are_the_registry_s() -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"# {' | '.join(PROVIDERS)}\n" in readme  # the example configuration's comment
    rows = _table_rows(readme, "### What `policy` prints")
    named = [name for row in rows for name in re.findall(r"`([a-z0-9]+)`", row[0])]
    assert sorted(named) == sorted(name for name in PROVIDERS if name != "local")


def test_a_provider_whose_sdk_is_missing_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import google.cloud.storage

    monkeypatch.setitem(sys.modules, "google.cloud.storage", None)  # as if not installed
    monkeypatch.delattr(google.cloud, "storage", raising=False)
    monkeypatch.delitem(sys.modules, "worker.storage.gcs", raising=False)
    backend_class.cache_clear()
    try:
        with pytest.raises(ConfigError) as err:
            settings_from_dict({"integrations": {"labs": {"provider": "gcs", "bucket": "labs"}}})
    finally:
        backend_class.cache_clear()
    assert "integration 'labs'" in str(err.value)
    assert "'google.cloud.storage', which is not installed" in str(err.value)
