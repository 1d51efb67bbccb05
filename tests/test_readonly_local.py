"""Read-only integrations on a local bucket: `preextract`, `registration.jsonl`, `verify`.

One pre-extraction of a mixed batch (images, a video, a MIRAX slide, a tiled TIFF) with
`--jobs 2` feeds every test; tests that damage or re-run work on copies.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageOps
from readonly_support import (
    Sources,
    build_sources,
    files_under,
    problem_keys,
    read_registration,
    run_cli,
)

from worker.config import settings_from_dict
from worker.items import Item, default_item_id
from worker.layout import SlotLayout
from worker.pipeline import process_item
from worker.preextract import SKIPPED_MESSAGE
from worker.storage import open_storage
from worker.storage.base import ReadOnlyView

IMAGE_FIELDS = {"type", "name", "path", "storage_key", "storage_thumbnail_key", "width", "height"}
VIDEO_FIELDS = IMAGE_FIELDS | {
    "native_fps",
    "fps",
    "visible_frames",
    "total_frames",
    "hls_segments",
    "storage_sections_key_prefix",
    "storage_sections_key_extension",
    "storage_low_quality_sections_key_prefix",
    "storage_frames_manifest_key",
    "storage_audio_peaks_key",
    "total_size_bytes",
}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Sources, Path, list[dict]]:
    """The mixed batch, pre-extracted once into a local DEST folder with two processes."""
    base = tmp_path_factory.mktemp("readonly-local")
    sources = build_sources(base / "bucket", base / "scratch")
    dest = base / "out"
    code, results = run_cli("preextract", str(sources.root), "--out", str(dest), "--jobs", "2")
    assert code == 0, results
    return sources, dest, results


def _bucket_with_assets(sources: Sources, dest: Path, where: Path) -> Path:
    """What the customer's bucket holds after uploading DEST: the sources plus the layout."""
    shutil.copytree(sources.root, where)
    shutil.copytree(dest / "data", where / "data", dirs_exist_ok=True)
    return where


def _readonly_config(tmp_path: Path, root: Path) -> Path:
    config = tmp_path / "mediaworker.toml"
    config.write_text(f'[integrations.ro]\nprovider = "local"\nroot = "{root}"\nreadonly = true\n')
    return config


def test_preextract_makes_one_ok_item_per_source(extracted: tuple) -> None:
    sources, dest, results = extracted
    assert sorted(r["key"] for r in results) == sorted(sources.keys.values())
    assert {r["status"] for r in results} == {"ok"}
    by_key = {r["key"]: r for r in results}
    assert by_key[sources.keys["video"]]["type"] == "video"
    assert by_key[sources.keys["mirax"]]["type"] == "slide"
    for result in results:
        # Ids are UUIDv5 of the key alone, so the bucket's verification looks in the same place.
        assert result["item_id"] == default_item_id(result["key"])
        slot = dest / SlotLayout("data", result["item_id"]).root
        assert (slot / "metadata.json").is_file()
        assert (slot / "thumbnail.jpg").stat().st_size > 0


def test_registration_has_every_spec5_field_matching_the_files(extracted: tuple) -> None:
    sources, dest, _ = extracted
    payloads = read_registration(dest / "registration.jsonl")
    assert sorted(payloads) == sorted(sources.keys.values())
    for key, payload in payloads.items():
        assert payload["name"] == Path(key).name
        assert payload["path"] == "/" + str(Path(key).parent)
        for field, value in payload.items():
            if field.endswith("_key") and field != "storage_key":
                assert (dest / value).stat().st_size > 0, (key, field)
        thumb = Image.open(dest / payload["storage_thumbnail_key"])
        assert thumb.width <= 356 and thumb.height <= 200
    _check_image(payloads[sources.keys["jpeg_exif_orientation_6"]], sources)
    _check_video(payloads[sources.keys["video"]], sources, dest)
    _check_slide(payloads[sources.keys["mirax"]], sources, dest)


def _check_image(payload: dict[str, Any], sources: Sources) -> None:
    assert IMAGE_FIELDS | {"size_bytes"} <= set(payload)
    path = sources.root / payload["storage_key"]
    assert payload["size_bytes"] == path.stat().st_size
    upright = ImageOps.exif_transpose(Image.open(path))
    assert (payload["width"], payload["height"]) == upright.size


def _check_video(payload: dict[str, Any], sources: Sources, dest: Path) -> None:
    assert set(payload) >= VIDEO_FIELDS
    assert payload["type"] == "video"
    assert payload["visible_frames"] == payload["total_frames"] == 36
    assert payload["native_fps"] == pytest.approx(12, abs=0.01)
    assert (payload["width"], payload["height"]) == (160, 120)
    for prefix in ("storage_sections_key_prefix", "storage_low_quality_sections_key_prefix"):
        assert len(list((dest / payload[prefix]).iterdir())) == 36
    manifest = (dest / payload["storage_frames_manifest_key"]).read_text().splitlines()
    assert len([line for line in manifest if line.strip()]) == 36
    assert gzip.decompress((dest / payload["storage_audio_peaks_key"]).read_bytes())
    for quality in ("high_quality", "low_quality"):
        hls = payload["hls_segments"][quality]
        segments = [ln for ln in hls["index"].splitlines() if ln and not ln.startswith("#")]
        assert len(segments) >= 2  # 3 s in 2 s segments
        seg_bytes = sum((dest / key).stat().st_size for key in segments)
        # Average bitrate over the 3 s clip, from the segments' own sizes.
        assert hls["bitrate"] == pytest.approx(seg_bytes * 8 / 3, rel=0.35)
    slot = dest / SlotLayout.containing(payload["storage_thumbnail_key"]).root
    outputs = sum(p.stat().st_size for n, p in files_under(slot).items() if n != "metadata.json")
    source = (sources.root / payload["storage_key"]).stat().st_size
    assert payload["total_size_bytes"] == source + outputs


def _check_slide(payload: dict[str, Any], sources: Sources, dest: Path) -> None:
    assert IMAGE_FIELDS | {"size_bytes", "level_count", "storage_dzi_key"} <= set(payload)
    assert payload["size_bytes"] == (sources.root / payload["storage_key"]).stat().st_size
    tiles = (dest / payload["storage_dzi_key"]).parent / "slide_files"
    assert payload["tile_count"] == len(files_under(tiles)) > 0


def test_mirax_folder_is_part_of_its_slide_not_items(extracted: tuple) -> None:
    sources, _, results = extracted
    folder = sources.keys["mirax"].removesuffix(".mrxs") + "/"
    assert any(k.startswith(folder) for k in files_under(sources.root))
    assert not [r for r in results if r["key"].startswith(folder)]


def test_verify_after_upload_is_ok_then_names_each_damaged_key(
    extracted: tuple, tmp_path: Path
) -> None:
    sources, dest, _ = extracted
    bucket = _bucket_with_assets(sources, dest, tmp_path / "bucket")
    config = _readonly_config(tmp_path, bucket)
    registration = str(dest / "registration.jsonl")
    code, results = run_cli("verify", "ro", "--from-file", registration, "--config", str(config))
    assert code == 0 and {r["status"] for r in results} == {"ok"}, results
    keys = list(sources.keys.values())
    code, results = run_cli("verify", "ro", *keys, "--config", str(config))
    assert code == 0 and {r["status"] for r in results} == {"ok"}, results
    # What was checked comes back compact: each numbered series is one entry with its count.
    checked = next(r for r in results if r["key"] == sources.keys["video"])["assets"]
    series = {(a["prefix"].rsplit("/", 3)[-3], a["pattern"]): a["count"] for a in checked
              if isinstance(a, dict)}  # fmt: skip
    frames = read_registration(dest / "registration.jsonl")[sources.keys["video"]]
    assert series[("sections", "%09d.jpg")] == frames["visible_frames"]
    assert ("segments", "%09d.ts") in series
    code, results = run_cli("verify", "ro", "--config", str(config))  # every committed item
    assert code == 0 and sorted(r["key"] for r in results) == sorted(keys), results

    video = read_registration(dest / "registration.jsonl")[sources.keys["video"]]
    image = read_registration(dest / "registration.jsonl")[sources.keys["png_alpha"]]
    low_section = video["storage_low_quality_sections_key_prefix"] + "/000000007.jpg"
    thumbnail = image["storage_thumbnail_key"]
    index = video["hls_segments"]["low_quality"]["index"]
    segment = next(line for line in index.splitlines() if line.endswith(".ts"))
    (bucket / low_section).unlink()
    (bucket / segment).unlink()
    with (bucket / thumbnail).open("r+b") as f:
        f.truncate(300)  # a JPEG header without its pixels
    manifest = bucket / video["storage_frames_manifest_key"]
    manifest.write_bytes(b"".join(manifest.read_bytes().splitlines(keepends=True)[:-1]))
    damaged = {low_section, thumbnail, segment, video["storage_frames_manifest_key"]}
    for args in (("--from-file", registration), tuple(keys), ()):
        code, results = run_cli("verify", "ro", *args, "--config", str(config))
        assert code == 1
        assert problem_keys(results) == damaged
        bad = {r["key"] for r in results if r["status"] == "missing_assets"}
        assert bad == {sources.keys["video"], sources.keys["png_alpha"]}
        assert {r["status"] for r in results if r["key"] not in bad} == {"ok"}


def test_verify_without_metadata_reports_the_marker(extracted: tuple, tmp_path: Path) -> None:
    sources, dest, _ = extracted
    bucket = _bucket_with_assets(sources, dest, tmp_path / "bucket")
    key = sources.keys["tiff"]
    slot = SlotLayout("data", default_item_id(key))
    (bucket / slot.metadata_key).unlink()
    code, results = run_cli(
        "verify", "ro", key, "--config", str(_readonly_config(tmp_path, bucket))
    )
    assert code == 1
    assert results[0]["status"] == "missing_assets"
    assert problem_keys(results) == {slot.metadata_key}
    assert "not pre-extracted" in results[0]["problems"][0]["problem"]


def test_preextract_resumes_and_redoes_changed_sources(extracted: tuple, tmp_path: Path) -> None:
    sources, _, _ = extracted
    src, out = tmp_path / "bucket", tmp_path / "out"
    shutil.copytree(sources.root, src)
    code, first = run_cli("preextract", str(src), "--out", str(out), "--jobs", "1")
    assert code == 0
    thumbs = {r["key"]: out / r["payload"]["storage_thumbnail_key"] for r in first}
    stamps = {key: path.stat().st_mtime_ns for key, path in thumbs.items()}
    changed = sources.keys["png_alpha"]
    shutil.copyfile(src / sources.keys["jpeg_exif_orientation_6"], src / changed)

    code, second = run_cli("preextract", str(src), "--out", str(out))
    assert code == 0
    skipped = {r["key"] for r in second if r["message"] == SKIPPED_MESSAGE}
    assert skipped == set(thumbs) - {changed}
    for key in skipped:
        assert thumbs[key].stat().st_mtime_ns == stamps[key]
    # The changed source was extracted again, and the registration says so.
    redone = read_registration(out / "registration.jsonl")[changed]
    assert redone["size_bytes"] == (src / changed).stat().st_size
    assert len(read_registration(out / "registration.jsonl")) == len(thumbs)


def test_worker_verifies_readonly_items_and_cannot_write(extracted: tuple, tmp_path: Path) -> None:
    sources, dest, _ = extracted
    bucket = _bucket_with_assets(sources, dest, tmp_path / "bucket")
    settings = settings_from_dict(
        {"integrations": {"ro": {"provider": "local", "root": str(bucket), "readonly": True}}}
    )
    storage = open_storage(settings.integration("ro"), settings)
    assert isinstance(storage, ReadOnlyView)
    assert not hasattr(storage, "write") and not hasattr(storage, "delete")
    before = {k: p.stat().st_mtime_ns for k, p in files_under(bucket).items()}
    for key in (sources.keys["video"], sources.keys["mirax"], "images/never-extracted.jpg"):
        result = process_item(Item(integration="ro", key=key), settings)
        expected = "missing_assets" if "never" in key else "ok"
        assert result.status == expected, result.message
    assert {k: p.stat().st_mtime_ns for k, p in files_under(bucket).items()} == before


def test_preextract_refuses_a_readonly_destination(tmp_path: Path, extracted: tuple) -> None:
    sources, _, _ = extracted
    config = _readonly_config(tmp_path, tmp_path)
    code, _ = run_cli("preextract", str(sources.root), "--out", "ro", "--config", str(config))
    assert code == 2
