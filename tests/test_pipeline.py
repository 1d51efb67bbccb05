"""The item pipeline and `mediaworker process` end to end on every backend (SPEC 4, 5, 7)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from fixtures.images import generate_images
from worker.cli import main
from worker.config import Integration, Settings
from worker.errors import StorageUnavailable
from worker.items import Item, default_item_id
from worker.layout import Rel, SlotLayout
from worker.payloads import Status
from worker.pipeline import process_item
from worker.storage import local as local_storage
from worker.storage import open_writable
from worker.storage.base import Storage
from worker.storage.local import LocalStorage


def _jpeg_with_red_corner(width: int = 1200, height: int = 800) -> bytes:
    """Blue picture, red top-left quarter: the thumbnail must keep both where they are."""
    image = Image.new("RGB", (width, height), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, width // 2, height // 2))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    return out.getvalue()


def _tiff(width: int = 300, height: int = 200) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (0, 200, 0)).save(out, "TIFF")
    return out.getvalue()


GOOD = {
    "photos/cam 1/red+corner #1.jpg": _jpeg_with_red_corner(),
    "photos/scan.tif": _tiff(),
}
BAD_FIXTURES = {  # fixtures.images' broken samples, each with the reason SPEC 9 gives it
    "empty": "corrupt_media",
    "truncated_jpeg": "corrupt_media",
    "corrupt_png": "corrupt_media",
    "random_bytes": "unsupported_format",
    "text": "unsupported_format",
    "bomb_png": "too_large",
    "bomb_jpeg": "too_large",
}


def _toml(integration: Integration) -> str:
    lines = [f"[integrations.{integration.name}]"]
    for field, value in integration.model_dump(exclude={"name", "path_style"}).items():
        if value is None or value == "":
            continue
        text = json.dumps(str(value)) if not isinstance(value, bool) else str(value).lower()
        lines.append(f"{field} = {text}")
    return "\n".join(lines) + "\n"


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict]]:
    with pytest.raises(SystemExit) as exited:
        main(args)
    out = capsys.readouterr().out
    return int(exited.value.code or 0), [json.loads(line) for line in out.splitlines() if line]


@pytest.mark.parametrize("kind", ["local", "s3", "azure", "gcs"])
def test_process_writes_image_layout_and_metadata(
    kind: str, make_integration, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, integration = make_integration(kind)
    storage = open_writable(integration, settings)
    keys = [_upload(storage, integration, key, data) for key, data in GOOD.items()]
    config = tmp_path / "mediaworker.toml"
    config.write_text(_toml(integration))

    code, results = _run_cli(
        ["process", integration.name, *keys, "--json", "--config", str(config)], capsys
    )

    assert code == 0, results
    assert [r["status"] for r in results] == ["ok", "ok"]
    jpeg, tiff = results
    layout = SlotLayout(integration.prefix, default_item_id(keys[0]), "0")
    assert jpeg["item_id"] == layout.item_id
    thumb = Image.open(io.BytesIO(storage.read_bytes(layout.key(Rel.THUMBNAIL))))
    assert thumb.size == (300, 200)  # 1200x800 fitted into 356x200
    assert _near(thumb.getpixel((40, 40)), (255, 0, 0))
    assert _near(thumb.getpixel((260, 160)), (0, 0, 255))
    assert not storage.exists(layout.key(Rel.display("jpg")))  # a browser shows JPEG as it is
    metadata = json.loads(storage.read_bytes(layout.metadata_key))
    payload = metadata["payload"]
    assert payload == jpeg["payload"]
    assert payload["type"] == "image"
    assert payload["name"] == "red+corner #1.jpg"
    assert payload["path"] == "/" + keys[0].rsplit("/", 1)[0]
    assert payload["storage_key"] == keys[0]
    assert payload["storage_thumbnail_key"] == layout.key(Rel.THUMBNAIL)
    assert (payload["width"], payload["height"]) == (1200, 800)
    assert payload["size_bytes"] == len(GOOD["photos/cam 1/red+corner #1.jpg"])
    assert metadata["source"]["etag"] == storage.head(keys[0]).etag
    for key in metadata["assets"]:
        assert storage.head(key).size > 0

    tiff_layout = SlotLayout(integration.prefix, tiff["item_id"], "0")
    display_key = tiff["payload"]["storage_display_key"]
    assert display_key.startswith(tiff_layout.root)
    display = Image.open(io.BytesIO(storage.read_bytes(display_key)))
    assert display.size == (300, 200)
    assert _near(display.getpixel((150, 100)), (0, 200, 0))


def test_bad_inputs_give_their_reason_and_good_items_are_done(
    make_integration, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    settings, integration = make_integration("local")
    storage = open_writable(integration, settings)
    samples = generate_images(tmp_path / "samples")
    good = [_upload(storage, integration, k, v) for k, v in GOOD.items()]
    bad = {
        _upload(
            storage, integration, f"bad/{samples[name].name}", samples[name].read_bytes()
        ): reason
        for name, reason in BAD_FIXTURES.items()
    }
    config = tmp_path / "mediaworker.toml"
    config.write_text(_toml(integration))
    keys = [good[0], *bad, "bad/never-uploaded.jpg", good[1]]

    code, results = _run_cli(
        ["process", integration.name, *keys, "--json", "--config", str(config)], capsys
    )

    assert code == 1
    by_key = {r["key"]: r for r in results}
    assert by_key[good[0]]["status"] == by_key[good[1]]["status"] == "ok"
    for key, reason in [*bad.items(), ("bad/never-uploaded.jpg", "not_found")]:
        result = by_key[key]
        assert (result["status"], result["reason"]) == ("failed", reason), result
        assert Path(key).name in result["message"]
        layout = SlotLayout(integration.prefix, result["item_id"], "0")
        assert not storage.exists(layout.metadata_key)


class _FailingAfterThumbnail(LocalStorage):
    """A local bucket that refuses every write once the thumbnail is written."""

    thumbnail_written = False

    def write(self, key, data, content_type="application/octet-stream", content_encoding=None):
        if self.thumbnail_written:
            raise StorageUnavailable(f"injected failure writing {key}")
        super().write(key, data, content_type, content_encoding)
        if key.endswith(Rel.THUMBNAIL):
            self.thumbnail_written = True  # latched: every later write fails, metadata.json too


def test_failure_after_thumbnail_leaves_no_marker_and_rerun_succeeds(make_integration) -> None:
    settings, integration, storage, item, layout = _page_tif(make_integration)
    key = item.key
    assert process_item(item, settings, storage).status == Status.OK  # an earlier good run

    failing = _FailingAfterThumbnail(integration.root, integration.name)
    result = process_item(item, settings, failing)

    assert failing.thumbnail_written
    assert (result.status, result.reason) == (Status.FAILED, "storage_unavailable")
    assert storage.exists(layout.key(Rel.THUMBNAIL))
    assert not storage.exists(layout.metadata_key)  # the earlier marker no longer vouches
    rerun = process_item(item, settings, storage)
    assert rerun.status == Status.OK
    assert json.loads(storage.read_bytes(layout.metadata_key))["payload"]["storage_key"] == key


class _CountingChanges(LocalStorage):
    """A local bucket that records every key written or deleted."""

    def __init__(self, root: Path, integration: str) -> None:
        super().__init__(root, integration)
        self.changed: list[str] = []

    def put(self, key, data, content) -> None:
        self.changed.append(key)
        super().put(key, data, content)

    def delete(self, key: str) -> None:
        self.changed.append(key)
        super().delete(key)


def test_a_redelivered_item_its_dead_worker_committed_is_not_redone(make_integration) -> None:
    settings, integration, storage, item, layout = _page_tif(make_integration)
    key = item.key
    first = process_item(item, settings, storage)
    marker = storage.read_bytes(layout.metadata_key)

    watched = _CountingChanges(integration.root, integration.name)
    again = process_item(item, settings, watched, redelivered=True)

    assert again.status == Status.OK and watched.changed == []  # nothing redone or rewritten
    assert (again.type, again.payload, again.assets) == (first.type, first.payload, first.assets)
    assert storage.read_bytes(layout.metadata_key) == marker
    assert process_item(item, settings, watched).status == Status.OK  # a first delivery redoes
    assert layout.metadata_key in watched.changed

    watched.changed.clear()
    storage.write(key, _tiff(320, 200))  # the source changed since: a new ETag
    redone = process_item(item, settings, watched, redelivered=True)
    assert redone.payload is not None and redone.payload["width"] == 320
    assert layout.metadata_key in watched.changed


def test_a_rerun_removes_what_a_killed_writer_left_in_the_slot(make_integration) -> None:
    settings, integration, storage, item, layout = _page_tif(make_integration)
    dead = subprocess.Popen([sys.executable, "-c", "import os; print(os.getpid())"],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    dead_pid = int(dead.communicate()[0])
    folder = integration.root / layout.key("sections")
    folder.mkdir(parents=True)
    host = local_storage._HOST
    killed = folder / f".000000001.jpg.{host}-{dead_pid}.00112233aabbccdd.partial"
    writing = folder / f".000000002.jpg.{host}-{os.getpid()}.00112233aabbccdd.partial"
    elsewhere = folder / f".000000003.jpg.0badc0de-{dead_pid}.00112233aabbccdd.partial"
    for path in (killed, writing, elsewhere):
        path.write_bytes(b"half a frame")

    assert process_item(item, settings, storage).status == Status.OK

    assert not killed.exists()  # its writer is gone: an orphan of this machine
    assert writing.exists() and elsewhere.exists()  # a live writer's, another machine's


def test_item_id_is_uuid5_of_key_alone_and_explicit_id_wins(
    make_integration, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    settings, integration = make_integration("local")
    storage = open_writable(integration, settings)
    key = _upload(storage, integration, "a/b.jpg", _jpeg_with_red_corner(400, 300))
    config = tmp_path / "mediaworker.toml"
    config.write_text(_toml(integration))
    base = ["process", integration.name, key, "--json", "--config", str(config)]

    _, [derived] = _run_cli(base, capsys)
    _, [explicit] = _run_cli([*base, "--item-id", "item-42", "--slot", "1"], capsys)

    assert (
        derived["item_id"] == default_item_id("a/b.jpg") == Item(integration="x", key=key).item_id
    )
    assert storage.exists(SlotLayout(integration.prefix, "item-42", "1").metadata_key)
    assert (
        explicit["payload"]["storage_thumbnail_key"]
        == f"{integration.prefix}/item-42/files/1/thumbnail.jpg"
    )


def _page_tif(make_integration) -> tuple[Settings, Integration, Storage, Item, SlotLayout]:
    """A local integration holding one TIFF page, and its item and slot layout."""
    settings, integration = make_integration("local")
    storage = open_writable(integration, settings)
    key = _upload(storage, integration, "scans/page.tif", _tiff())
    item = Item(integration=integration.name, key=key)
    return (
        settings,
        integration,
        storage,
        item,
        SlotLayout(integration.prefix, item.item_id, item.slot),
    )


def _upload(storage: Storage, integration: Integration, key: str, data: bytes) -> str:
    full = f"{integration.azure_container}/{key}" if integration.provider == "azure" else key
    storage.write(full, data)
    return full


def _near(pixel: tuple[int, ...], expected: tuple[int, int, int], tolerance: int = 24) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], expected, strict=True))
