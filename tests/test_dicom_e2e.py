"""DICOM whole-slide images end to end: `mediaworker process` on the S3 server (moto) and on
Azurite lists the series' folder, fetches its instances and writes the slide layout, which
`verify` passes in place and `preextract` of the bucket makes again as one item; a series
missing a level fails as `slide_incomplete` on both; a refused listing names s3:ListBucket;
`preextract` of a local folder makes one item of the series and `verify` of the uploaded result
passes; `reprocess` of a bucket enqueues the series once, by its folder, and skips it once done."""

from __future__ import annotations

import io
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from ops_support import run_cli, write_config
from PIL import Image
from readonly_support import read_registration
from readonly_support import run_cli as run_main
from servers import moto_enforcing_iam
from slide_support import deep_zoom_tiles, reader_without_listing

from fixtures.dicom import LAYOUT, MISSING_LEVEL, generate_dicom
from worker.assets import iter_keys
from worker.config import Integration
from worker.items import Item, default_item_id
from worker.layout import Rel, SlotLayout
from worker.payloads import ItemResult, Status
from worker.pipeline import process_item
from worker.reprocess import ReprocessOptions, reprocess
from worker.storage import open_writable
from worker.storage.base import Storage


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_dicom(tmp_path_factory.mktemp("dicom"))


def _upload(storage: Storage, folder: Path, parent: str) -> str:
    """Every instance of the series into `parent/`, as a customer's bucket holds them."""
    for path in sorted(folder.iterdir()):
        storage.write(f"{parent}/{path.name}", path)
    return parent + "/"


def _parent(integration: Integration) -> str:
    if integration.provider == "azure":
        return f"{integration.azure_container}/scans/case1"
    return "scans/case1"


def _process(capsys: pytest.CaptureFixture[str], config: Path, name: str, key: str) -> dict:
    code, out, err = run_cli(capsys, "process", name, key, "--json", "--config", str(config))
    [result] = [json.loads(line) for line in out.splitlines()]
    assert code == (0 if result["status"] == "ok" else 1), err
    return result


@pytest.mark.parametrize(("kind", "by"), [("s3", "folder"), ("azure", "instance")])
def test_process_dicom_lists_its_folder_and_writes_the_slide_layout(
    kind: str,
    by: str,
    make_integration,
    fixtures: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings, integration = make_integration(kind)
    storage = open_writable(integration, settings)
    folder_key = _upload(storage, fixtures["series"], _parent(integration))
    key = folder_key if by == "folder" else folder_key + "label.dcm"
    config = write_config(tmp_path / "mediaworker.toml", integration)

    result = _process(capsys, config, integration.name, key)

    assert (result["status"], result["type"], result["key"]) == ("ok", "slide", key), result
    payload = result["payload"]
    opened = folder_key + ("level-0.dcm" if by == "folder" else "label.dcm")
    # Registered by the instance opened, named after the series' folder.
    assert (payload["storage_key"], payload["name"]) == (opened, "case1")
    assert payload["path"] == "/" + folder_key.rstrip("/").rsplit("/", 1)[0]
    assert (payload["width"], payload["height"], payload["level_count"]) == (1024, 768, 4)
    assert (payload["microns_per_pixel_x"], payload["objective_power"]) == (0.25, 20.0)
    layout = SlotLayout(integration.prefix, default_item_id(key))
    dzi = ET.fromstring(storage.read_bytes(layout.key(Rel.DZI)))
    size = next(el for el in dzi.iter() if el.tag.endswith("Size")).attrib
    assert (dzi.attrib["TileSize"], dzi.attrib["Overlap"]) == ("254", "1")
    assert (size["Width"], size["Height"]) == ("1024", "768")
    assets = ItemResult.model_validate(result).assets
    tiles = [k for k in iter_keys(assets) if k.startswith(layout.key(Rel.TILES_DIR))]
    assert len(tiles) == payload["tile_count"] == deep_zoom_tiles(1024, 768)
    assert payload["storage_associated_keys"] == {
        name: layout.key(Rel.associated(name)) for name in ("label", "macro")
    }
    macro = Image.open(io.BytesIO(storage.read_bytes(layout.key(Rel.associated("macro")))))
    assert all(
        abs(a - b) <= 12 for a, b in zip(macro.getpixel((5, 5)), LAYOUT.overview, strict=True)
    )
    thumbnail = Image.open(io.BytesIO(storage.read_bytes(layout.key(Rel.THUMBNAIL))))
    assert thumbnail.size == (267, 200)
    for mark in LAYOUT.marks:
        x, y = mark.center
        pixel = thumbnail.getpixel((x * 267 // 1024, y * 200 // 768))
        assert all(abs(a - b) <= 30 for a, b in zip(pixel, mark.rgb, strict=True)), mark.name
    assert json.loads(storage.read_bytes(layout.metadata_key))["payload"] == payload

    # Verified in place as a read-only integration would be: every key, the thumbnail, the tiles.
    readonly = integration.model_copy(update={"name": "ro", "readonly": True})
    ro_config = write_config(tmp_path / "ro.toml", readonly)
    assert _process(capsys, ro_config, "ro", key)["status"] == "ok"
    # Pre-extracted from the bucket itself: the folder's instances are one item, its folder.
    out = tmp_path / "out"
    code, lines, err = run_cli(
        capsys, "preextract", f"{integration.name}:{folder_key}", "--out", str(out),
        "--json", "--config", str(config),
    )  # fmt: skip
    extracted = [json.loads(line) for line in lines.splitlines()]
    assert code == 0 and [(r["key"], r["status"]) for r in extracted] == [(folder_key, "ok")], err
    assert list(read_registration(out / "registration.jsonl")) == [folder_key + "level-0.dcm"]


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_a_series_missing_a_level_fails_as_slide_incomplete(
    kind: str,
    make_integration,
    fixtures: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings, integration = make_integration(kind)
    storage = open_writable(integration, settings)
    parent = _parent(integration).replace("case1", "case2")
    key = _upload(storage, fixtures["missing_level"], parent)
    config = write_config(tmp_path / "mediaworker.toml", integration)

    result = _process(capsys, config, integration.name, key)

    assert (result["status"], result["reason"]) == ("failed", "slide_incomplete")
    width, height = LAYOUT.level_size(MISSING_LEVEL)
    assert f"level {width}x{height} (downsample 2) is missing" in result["message"]
    assert not storage.exists(SlotLayout(integration.prefix, default_item_id(key)).metadata_key)


def test_listing_refused_by_the_s3_server_names_s3_listbucket(
    make_integration,
    moto_endpoint: str,
    fixtures: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings, integration = make_integration("s3")
    key = _upload(open_writable(integration, settings), fixtures["series"], "scans/case3")
    key += "level-1.dcm"
    reader = reader_without_listing(moto_endpoint, integration, "scans")
    config = write_config(tmp_path / "mediaworker.toml", integration)

    with moto_enforcing_iam(moto_endpoint):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", reader[0])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", reader[1])
        result = _process(capsys, config, integration.name, key)

    assert (result["status"], result["reason"]) == ("failed", "permission_denied")
    assert "s3:ListBucket" in result["message"] and "scans/case3/" in result["message"]


def test_preextract_makes_one_item_of_the_series_and_verify_passes(
    fixtures: dict[str, Path], tmp_path: Path
) -> None:
    bucket = tmp_path / "bucket"
    shutil.copytree(fixtures["series"], bucket / "scans/case1")
    out = tmp_path / "out"

    code, results = run_main("preextract", str(bucket), "--out", str(out))
    assert code == 0, results
    [result] = results
    assert (result["key"], result["status"], result["type"]) == ("scans/case1/", "ok", "slide")
    code, again = run_main("preextract", str(bucket), "--out", str(out))
    assert code == 0 and "skipped" in again[0]["message"]
    registration = read_registration(out / "registration.jsonl")
    assert list(registration) == ["scans/case1/level-0.dcm"]

    shutil.copytree(out / "data", bucket / "data")
    config = tmp_path / "mediaworker.toml"
    config.write_text(
        f'[integrations.ro]\nprovider = "local"\nroot = "{bucket}"\nreadonly = true\n'
    )
    code, verified = run_main("verify", "ro", "scans/case1/", "--config", str(config))
    assert code == 0 and verified[0]["status"] == "ok", verified
    tile = next((bucket / "data").rglob("slide_files/0/0_0.jpeg"))
    tile.unlink()
    registration_file = str(out / "registration.jsonl")
    code, verified = run_main(
        "verify", "ro", "--from-file", registration_file, "--config", str(config)
    )
    assert code == 1 and verified[0]["status"] == "missing_assets"
    assert verified[0]["problems"][0]["key"].endswith("slide_files/0/0_0.jpeg")


def test_reprocess_enqueues_a_series_once_and_skips_it_once_done(
    make_integration, fixtures: dict[str, Path]
) -> None:
    settings, integration = make_integration("s3")
    storage = open_writable(integration, settings)
    key = _upload(storage, fixtures["series"], "scans/case4")
    storage.write("scans/photo.png", fixtures["series"] / "label.dcm")  # not grouped with it
    sent: list[Item] = []

    def enqueue(items: list[Item]) -> list[str]:
        sent.extend(items)
        return [item.item_id for item in items]

    first = reprocess(storage, integration, ReprocessOptions(), enqueue)

    assert sorted(i.key for i in sent if i.key.endswith("/")) == [key]
    assert first.by_type["slide"] == 1 and first.enqueued == 2
    [series] = [i for i in sent if i.key == key]
    assert process_item(series, settings, storage).status == Status.OK
    sent.clear()
    second = reprocess(storage, integration, ReprocessOptions(), enqueue)
    assert key not in [i.key for i in sent] and second.up_to_date == 1
