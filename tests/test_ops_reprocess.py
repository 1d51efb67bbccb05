"""`mediaworker reprocess`: listing, filters, up-to-date skipping by source ETag and pipeline
version, batches, dry runs; on a 5,000-key bucket on moto's S3 server, and end to end with
items processed for real by the pipeline."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ops_support import marker_for, put_many, run_cli, write_config

from fixtures.slides import generate_slides
from worker.config import Integration, Settings
from worker.errors import ConfigError
from worker.items import Item, ItemType, default_item_id
from worker.layout import SlotLayout
from worker.payloads import Status
from worker.pipeline import process_item
from worker.reprocess import ReprocessOptions, parse_since, reprocess, type_of_key
from worker.storage import open_writable

N_IMAGES, N_VIDEOS, N_SLIDES = 3000, 1500, 500
N_KEYS = N_IMAGES + N_VIDEOS + N_SLIDES


def _source_keys() -> list[str]:
    keys = [f"batch/img/{i:05d}.jpg" for i in range(N_IMAGES)]
    keys += [f"batch/vid/{i:05d}.mp4" for i in range(N_VIDEOS)]
    keys += [f"batch/wsi/{i:05d}.svs" for i in range(N_SLIDES)]
    return keys


class Recorder:
    """An enqueue function that keeps every batch it was handed."""

    def __init__(self) -> None:
        self.batches: list[list[Item]] = []

    def __call__(self, items: list[Item]) -> list[str]:
        self.batches.append(items)
        return [item.item_id for item in items]

    @property
    def items(self) -> list[Item]:
        return [item for batch in self.batches for item in batch]


@pytest.fixture(scope="module")
def big_bucket(
    make_integration, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, Integration, Path]:
    """5,000 tiny sources on the moto server, plus a README and an old rendition that are not
    sources, and the config file naming the bucket."""
    settings, integ = make_integration("s3")
    objects = [(key, key.encode()) for key in _source_keys()]
    objects += [("batch/README.txt", b"notes"), ("data/xyz/files/0/thumbnail.jpg", b"old")]
    put_many(moto_endpoint, integ.bucket, objects)
    config = write_config(tmp_path_factory.mktemp("cfg") / "mediaworker.toml", integ)
    return settings, integ, config


def _dry_run_counts(capsys: pytest.CaptureFixture[str], config: Path, name: str, *extra: str):
    code, out, _ = run_cli(capsys, "reprocess", name, "--config", str(config), "--json",
                           "--dry-run", *extra)  # fmt: skip
    assert code == 0
    return json.loads(out.strip().splitlines()[-1])


def test_5000_keys_dry_run_then_half_processed_then_force(
    big_bucket: tuple[Settings, Integration, Path],
    moto_endpoint: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings, integ, config = big_bucket
    first = _dry_run_counts(capsys, config, integ.name)
    assert first["listed"] == N_KEYS + 2
    assert first["not_sources"] == 2
    assert first["skipped_up_to_date"] == 0
    assert first["enqueued"] == N_KEYS
    assert first["by_type"] == {"image": N_IMAGES, "video": N_VIDEOS, "slide": N_SLIDES}

    # "Process" every other key: a commit marker naming the source's real ETag and this
    # pipeline version, as the pipeline writes it (real processing is tested below).
    listing = {info.key: info.etag for info in open_writable(integ, settings).list("batch/")}
    done = _source_keys()[::2]
    markers = [
        (SlotLayout(integ.prefix, default_item_id(k)).metadata_key,
         marker_for(integ.prefix, k, listing[k]).model_dump_json().encode())
        for k in done
    ]  # fmt: skip
    put_many(moto_endpoint, integ.bucket, markers)

    # The second run skips exactly those: the enqueued set is the other half, in batches.
    recorder = Recorder()
    second = reprocess(
        open_writable(integ, settings), integ, ReprocessOptions(batch_size=1000), recorder
    )
    assert second.listed == N_KEYS + 2 + len(done)
    assert second.not_sources == 2 + len(done)  # the markers are ours, not sources
    assert second.up_to_date == len(done) == N_KEYS // 2
    assert {item.key for item in recorder.items} == set(_source_keys()[1::2])
    assert [len(b) for b in recorder.batches] == [1000, 1000, 500]

    forced = _dry_run_counts(capsys, config, integ.name, "--force")
    assert forced["skipped_up_to_date"] == 0
    assert forced["enqueued"] == N_KEYS


def test_filters_under_and_type(big_bucket: tuple[Settings, Integration, Path]) -> None:
    settings, integ, _ = big_bucket
    recorder = Recorder()
    options = ReprocessOptions(under="batch/wsi/", force=True, dry_run=False, batch_size=128)
    summary = reprocess(open_writable(integ, settings), integ, options, recorder)
    assert summary.listed == N_SLIDES
    assert summary.enqueued == N_SLIDES
    assert {i.type for i in recorder.items} == {ItemType.SLIDE}
    assert [len(b) for b in recorder.batches] == [128, 128, 128, 116]

    videos = reprocess(
        open_writable(integ, settings),
        integ,
        ReprocessOptions(under="batch/", item_type=ItemType.VIDEO, force=True, dry_run=True),
        Recorder(),
    )
    assert videos.enqueued == N_VIDEOS
    assert videos.by_type == {"video": N_VIDEOS}


def test_since_filters_by_last_modified(make_integration) -> None:
    settings, integ = make_integration("local")
    storage = open_writable(integ, settings)
    for key in ("old/a.jpg", "new/b.jpg"):
        storage.write(key, b"x")
    assert integ.root is not None
    old = (datetime.now(UTC) - timedelta(days=30)).timestamp()
    os.utime(integ.root / "old/a.jpg", (old, old))
    since = datetime.now(UTC) - timedelta(days=1)
    recorder = Recorder()
    summary = reprocess(storage, integ, ReprocessOptions(since=since, force=True), recorder)
    assert [i.key for i in recorder.items] == ["new/b.jpg"]
    assert summary.filtered_out == 1


@pytest.fixture(scope="module")
def mirax_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_slides(tmp_path_factory.mktemp("slides"))["mirax"]


def _add_slide(storage, mrxs: Path, key: str) -> None:
    storage.write(key, mrxs)
    folder = key.removesuffix(".mrxs")
    for part in sorted(mrxs.with_suffix("").iterdir()):
        storage.write(f"{folder}/{part.name}", part)


def test_end_to_end_with_real_processing(make_integration, mirax_slide: Path) -> None:
    """Three MIRAX slides on S3; two processed by the pipeline. Reprocess skips exactly those,
    ignores the slides' data folders, and redoes one whose source changed (new ETag) and all of
    them after a pipeline version bump."""
    settings, integ = make_integration("s3")
    storage = open_writable(integ, settings)
    keys = [f"slides/s{i}.mrxs" for i in range(3)]
    for key in keys:
        _add_slide(storage, mirax_slide, key)
    for key in keys[:2]:
        result = process_item(Item(integration=integ.name, key=key, type="slide"), settings)
        assert result.status == Status.OK, result.message

    recorder = Recorder()
    summary = reprocess(storage, integ, ReprocessOptions(), recorder)
    assert [i.key for i in recorder.items] == [keys[2]]
    assert summary.up_to_date == 2
    assert summary.by_type == {"slide": 1}
    files_per_slide = 1 + len(list(mirax_slide.with_suffix("").iterdir()))
    assert summary.not_sources == summary.listed - 3
    assert summary.listed > 3 * files_per_slide  # renditions were listed too, and set aside

    # The source changes: same key, new bytes, new ETag -> redone; the other stays skipped.
    storage.write(keys[0], mirax_slide.read_bytes() + b"\n")
    recorder = Recorder()
    reprocess(storage, integ, ReprocessOptions(), recorder)
    assert sorted(i.key for i in recorder.items) == [keys[0], keys[2]]

    # A pipeline version bump makes every marker stale.
    import worker.markers as rule_module  # the one "up to date" rule

    original = rule_module.PIPELINE_VERSION
    rule_module.PIPELINE_VERSION = original + "-next"
    try:
        recorder = Recorder()
        bumped = reprocess(storage, integ, ReprocessOptions(), recorder)
    finally:
        rule_module.PIPELINE_VERSION = original
    assert bumped.up_to_date == 0 and bumped.enqueued == 3


def test_human_summary_and_bad_since(
    make_integration, tmp_path: Path, capsys: pytest.CaptureFixture[str], mirax_slide: Path
) -> None:
    settings, integ = make_integration("local")
    storage = open_writable(integ, settings)
    for i in range(3):
        storage.write(f"imgs/{i}.png", b"x")
    _add_slide(storage, mirax_slide, "wsi/a.mrxs")
    config = write_config(tmp_path / "mw.toml", integ)
    code, out, err = run_cli(capsys, "reprocess", integ.name, "--config", str(config), "--dry-run")
    assert code == 0 and out == ""
    assert "would enqueue" in err and "skipped as up to date" in err
    assert "image" in err and "slide" in err

    code, _, err = run_cli(capsys, "reprocess", integ.name, "--config", str(config),
                           "--since", "last tuesday")  # fmt: skip
    assert code == 2
    assert "--since" in err and "YYYY-MM-DD" in err
    with pytest.raises(ConfigError):
        parse_since("yesterday")
    assert parse_since("2024-05-01").tzinfo is not None


def test_extension_table() -> None:
    assert type_of_key("a/b/C.JPG") == ItemType.IMAGE
    assert type_of_key("clip.mov") == ItemType.VIDEO
    assert type_of_key("x.ndpi") == ItemType.SLIDE
    assert type_of_key("notes.txt") is None
    assert type_of_key("Slidedat.ini") is None


def test_custom_item_ids_and_pyramidal_tif(
    make_integration, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Items under ids of the registering system's choosing are found by the source key and
    ETag their markers record; a pyramidal `.tif` counts as a slide, a flat one as an image."""
    from PIL import Image

    from fixtures.slides import write_tiled_tiff

    settings, integ = make_integration("s3")
    storage = open_writable(integ, settings)
    storage.write("wsi/pyramid.tif", write_tiled_tiff(tmp_path / "pyramid.tif"))
    Image.new("RGB", (64, 48), (10, 200, 30)).save(tmp_path / "flat.tif")
    storage.write("photos/flat.tif", tmp_path / "flat.tif")
    for key in ("imgs/a.jpg", "imgs/b.jpg", "imgs/c.jpg"):
        storage.write(key, key.encode())
    etags = {info.key: info.etag for info in storage.list("")}
    # a.jpg is done under a custom id; b.jpg under another, but from bytes since replaced.
    for item_id, key, etag in (("acme-a", "imgs/a.jpg", etags["imgs/a.jpg"]),
                               ("acme-b", "imgs/b.jpg", "an-older-etag")):  # fmt: skip
        marker = marker_for(integ.prefix, key, etag).model_copy(update={"item_id": item_id})
        storage.write(SlotLayout(integ.prefix, item_id).metadata_key,
                      marker.model_dump_json().encode())  # fmt: skip

    config = write_config(tmp_path / "mw.toml", integ)
    counts = _dry_run_counts(capsys, config, integ.name)
    assert counts["by_type"] == {"image": 3, "slide": 1}
    assert counts["skipped_up_to_date"] == 1
    assert counts["enqueued"] == 4

    recorder = Recorder()
    reprocess(storage, integ, ReprocessOptions(), recorder)
    ids = {item.key: item.item_id for item in recorder.items}
    assert ids == {
        "imgs/b.jpg": "acme-b",  # redone where it lives, not under a new default id
        "imgs/c.jpg": default_item_id("imgs/c.jpg"),
        "photos/flat.tif": default_item_id("photos/flat.tif"),
        "wsi/pyramid.tif": default_item_id("wsi/pyramid.tif"),
    }
    assert {i.key: i.type for i in recorder.items}["wsi/pyramid.tif"] == ItemType.SLIDE
    slides = reprocess(storage, integ, ReprocessOptions(item_type=ItemType.SLIDE), Recorder())
    assert (slides.enqueued, slides.filtered_out) == (1, 4)
