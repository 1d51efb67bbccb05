"""The media-kind registry is the only source of what the worker reads: every sniffable
extension maps to one kind, and `ItemType`, sniffing, reprocess's extensions, the queue routes
and the task names are all read from it; no other module keeps its own extension set, magic
numbers or queue table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tasks.items import TASKS
from worker import celery_app, queue
from worker.config import Settings
from worker.items import Item, ItemType
from worker.kinds import imported, registry
from worker.media.sniff import sniff
from worker.reprocess import type_of_key

ROOT = Path(__file__).resolve().parents[1]
KIND_MODULES = ROOT / "worker" / "kinds"


def test_every_extension_maps_to_exactly_one_kind() -> None:
    claimed: dict[str, list[str]] = {}
    for entry in registry.FORMATS:
        assert entry.kind in registry.KIND_NAMES, entry
        for ext in entry.extensions:
            assert ext == ext.lower() and ext.startswith("."), ext
            claimed.setdefault(ext, []).append(entry.kind)
    assert all(len(kinds) == 1 for kinds in claimed.values()), claimed
    assert set(claimed) == registry.EXTENSIONS


@pytest.mark.parametrize("ext", sorted(registry.EXTENSIONS))
def test_sniffing_and_reprocess_agree_with_the_registry_on_each_extension(ext: str) -> None:
    kind = registry.format_of(f"a/b/x{ext}").kind  # type: ignore[union-attr]
    # Bytes that say nothing: the extension decides, the same way everywhere.
    assert sniff(b"\0" * 64, f"a/b/x{ext}") == ItemType(kind)
    assert sniff(b"\0" * 64, f"a/b/X{ext.upper()}") == ItemType(kind)
    assert type_of_key(f"a/b/x{ext}") == ItemType(kind)


def test_item_types_are_the_registered_kinds() -> None:
    assert [t.value for t in ItemType] == ["auto", *registry.KIND_NAMES]


def test_queues_and_task_names_are_derived_from_the_registry() -> None:
    config = celery_app.make_app(Settings()).conf
    for kind in registry.KINDS:
        assert config.task_routes[kind.task] == {"queue": kind.queue}
        assert TASKS[kind.name].name == kind.task
        assert queue.queue_of(kind.name) == kind.queue
    assert celery_app.QUEUES == registry.QUEUES
    assert celery_app.TASK_NAMES == registry.TASK_NAMES
    assert queue.queue_of(ItemType.AUTO) == registry.FALLBACK_QUEUE
    assert len(set(registry.QUEUES)) == len(registry.KINDS)


def test_a_folder_key_is_an_item_of_the_format_that_lists_folders() -> None:
    folders = [f for f in registry.FORMATS if f.folder_keys]
    assert len(folders) == 1 and folders[0].source is not None
    assert sniff(b"", "scans/case/") == ItemType(folders[0].kind)


def test_listed_keys_group_into_items_through_the_registry() -> None:
    keys = ["a/x.jpg", "s/level-0.dcm", "s/label.dcm", "root.dcm", "top.dcm", "m.mrxs", "m/i.dat"]
    assert registry.item_keys(keys) == ["a/x.jpg", "m.mrxs", "root.dcm", "s/"]
    # A series claims its instances, not its folder; a MIRAX slide claims its whole folder.
    keys += ["s/notes.png", "s/sub/a.dcm", "m/sub/x.jpg"]
    assert registry.item_keys(keys) == [
        "a/x.jpg",
        "m.mrxs",
        "root.dcm",
        "s/",
        "s/notes.png",
        "s/sub/",
    ]


def _python_files() -> list[Path]:
    files = [*(ROOT / "worker").rglob("*.py"), *(ROOT / "tasks").rglob("*.py")]
    # The settings name queues in their documented defaults (`limits.queue_timeout_seconds`).
    return [p for p in files if KIND_MODULES not in p.parents and p.name != "config.py"]


EXTENSION = re.compile(r"^\.[a-z0-9]{2,6}$")
QUEUE_OR_TASK = re.compile(r"^(?:images|videos|slides|mediaworker\.process_\w+)$")


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef))]
    return {id(n.body[0].value) for n in nodes if ast.get_docstring(n) is not None}  # type: ignore[attr-defined]


def _strings(node: ast.AST, skip: set[int]) -> list[str]:
    return [
        n.value
        for n in ast.walk(node)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip
    ]


def test_no_other_module_keeps_its_own_extension_set_or_kind_table() -> None:
    """Outside `worker/kinds/`, no set, list or tuple literal lists source extensions (a second
    table; Content-Type maps are not sets of sources), and no code names a queue or a task by
    hand."""
    offenders = []
    for path in _python_files():
        tree = ast.parse(path.read_text())
        skip = _docstrings(tree)
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Set | ast.List | ast.Tuple):
                found = [s for s in _strings(node, skip) if EXTENSION.match(s)]
                if sum(s in registry.EXTENSIONS for s in found) >= 2:
                    offenders.append(f"{where}:{node.lineno} {found}")
        named = sorted({s for s in _strings(tree, skip) if QUEUE_OR_TASK.match(s)})
        if named:
            offenders.append(f"{where}: {named}")
    assert not offenders, offenders


def test_every_step_a_kind_names_late_exists() -> None:
    """A kind names its payload builder and verification steps as `module:name`, imported on
    first use: a typo must fail here, not on the first item of that kind."""
    for kind in registry.KINDS:
        assert isinstance(imported(kind.payload_model), type), kind.name
        for step in (kind.payload, kind.assets, kind.claims, kind.check):
            if step is not None and ":" in step.__qualname__:
                assert callable(imported(step.__qualname__)), (kind.name, step.__qualname__)


def test_an_item_of_each_kind_is_accepted() -> None:
    for name in registry.KIND_NAMES:
        assert Item(integration="i", key="k", type=name).type == ItemType(name)
