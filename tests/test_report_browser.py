"""The report of a mixed batch, opened in a real headless Chromium.

One `preextract --report` run over images, videos (1080p with audio, rotated, 10-bit HEVC, VP9),
a slide and broken files; the page is served over HTTP from the output folder and checked as a
person would look at it: thumbnails show, both HLS qualities play at the payload's size, the
waveform draws, the slide's Deep Zoom opens at its size and loads its full-resolution tiles,
failures show under their reason with the fix. Screenshots go to .cache/test-artifacts/.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import av
import pytest
from browser import chromium, page_data, screenshot, serve, wait_for
from ops_support import write_config

from fixtures.images import generate_images
from fixtures.slides import generate_slides
from fixtures.videos import CLIPS, HD_CLIP, rotate_mp4, write_clip
from worker.cli import cli
from worker.cli.common import run_guarded
from worker.media.frames import low_size
from worker.reasons import REASONS
from worker.storage import open_writable

VIDEOS = ("videos/hd_1080p.mp4", "videos/rotated.mp4", "videos/hevc_10bit.mp4", "videos/vp9.webm")
STALL_NOTES = {"bufferSeekOverHole", "bufferNudgeOnStall", "bufferStalledError"}
BROKEN = {
    "images/corrupt.png": "corrupt_media",
    "videos/random.mp4": "unsupported_format",
    "slides/no_folder.mrxs": "mirax_incomplete",
}


def _sources(src: Path, work: Path) -> None:
    images = generate_images(work / "images")
    slides = generate_slides(work / "slides")
    picks = {
        "images/oriented.jpg": images["jpeg_exif_orientation_6"],
        "images/alpha.png": images["png_alpha"],
        "images/photo.heic": images["heic"],
        "images/corrupt.png": images["corrupt_png"],
        "slides/pyramid.tiff": slides["tiled_tiff"],
        "slides/no_folder.mrxs": slides["broken_no_folder"],
        "videos/random.mp4": work / "random.mp4",
    }
    (work / "random.mp4").write_bytes(bytes(range(256)) * 64)
    for key, path in picks.items():
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, src / key)
    write_clip(src / VIDEOS[0], HD_CLIP)
    rotate_mp4(write_clip(work / "upright.mp4", CLIPS["h264_mp4"]), src / VIDEOS[1])
    write_clip(src / VIDEOS[2], CLIPS["hevc_10bit_mp4"])
    write_clip(src / VIDEOS[3], CLIPS["vp9_opus_webm"])


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    """The output folder (with report.html) and the result lines by key."""
    src, dest = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("out")
    _sources(src, tmp_path_factory.mktemp("work"))
    argv = ["preextract", str(src), "--out", str(dest), "--json"]
    argv += ["--report", str(dest / "report.html")]
    out = StringIO()
    with redirect_stdout(out):
        code = run_guarded(lambda: cli.main(argv, "mediaworker", standalone_mode=False))
    results = {r["key"]: r for r in map(json.loads, out.getvalue().splitlines())}
    assert code == 1 and (dest / "report.html").is_file()
    assert {k for k, r in results.items() if r["status"] == "failed"} == set(BROKEN), results
    return dest, results


@pytest.fixture(scope="module")
def page(batch: tuple[Path, dict[str, Any]]) -> Iterator[Any]:
    dest, _ = batch
    with serve(dest) as base, chromium() as driver:
        driver.get(f"{base}/report.html")
        yield driver


def _id(result: dict[str, Any]) -> str:
    return f"{result['item_id']}/{result['slot']}"


def test_every_thumbnail_loads_and_the_sheet_filters(page: Any, batch: Any) -> None:
    _, results = batch
    ok = [r for r in results.values() if r["status"] == "ok"]
    # Lazy images load when they come into view: bring each card there.
    page.execute_script("document.querySelectorAll('#sheet img').forEach(i => i.scrollIntoView())")
    loaded = wait_for(
        page,
        "const imgs = [...document.querySelectorAll('#sheet img')];"
        "return imgs.every(i => i.complete && i.naturalWidth > 0)"
        " && imgs.map(i => [i.alt, i.naturalWidth, i.naturalHeight]);",
    )
    assert loaded, page.execute_script(
        "return [...document.querySelectorAll('#sheet img')].map(i => [i.alt, i.naturalWidth])"
    )
    assert sorted(alt for alt, _, _ in loaded) == sorted(r["key"] for r in ok)
    assert all(0 < w <= 356 and 0 < h <= 200 for _, w, h in loaded)
    page.execute_script("window.scrollTo(0, 0)")
    screenshot(page, "report-sheet.png")

    page.execute_script(
        "const s = document.getElementById('filter-status'); s.value = 'failed';"
        "s.dispatchEvent(new Event('change'));"
    )
    shown = page.execute_script(
        "return [...document.querySelectorAll('#sheet .card')].filter(c => !c.hidden)"
        ".map(c => c.querySelector('.key').textContent)"
    )
    page.execute_script(
        "const s = document.getElementById('filter-status'); s.value = '';"
        "s.dispatchEvent(new Event('change'));"
    )
    assert sorted(shown) == sorted(BROKEN)


def test_counts_show_types_statuses_and_reasons(page: Any, batch: Any) -> None:
    _, results = batch
    tables = page.execute_script(
        "const out = {}; for (const t of document.querySelectorAll('#counts table'))"
        " out[t.dataset.count] = Object.fromEntries([...t.querySelectorAll('tbody tr')]"
        ".map(r => [r.cells[0].textContent, Number(r.cells[1].textContent)])); return out;"
    )
    assert tables["status"] == {"ok": len(results) - len(BROKEN), "failed": len(BROKEN)}
    assert tables["type"] == dict(Counter(r["type"] for r in results.values()))
    assert tables["type"]["video"] >= len(VIDEOS)
    assert tables["reason"] == dict.fromkeys(BROKEN.values(), 1)


def test_failures_show_under_their_reason_with_the_fix(page: Any, batch: Any) -> None:
    _, results = batch
    for key, reason in BROKEN.items():
        text = page.execute_script(
            "const box = document.querySelector(`.reason[data-reason='${arguments[0]}']`);"
            "return box && box.textContent;",
            reason,
        )
        assert text and key in text and results[key]["message"] in text, (reason, text)
        assert REASONS[reason].fix.replace("`", "") in text


@pytest.mark.parametrize("key", VIDEOS)
def test_both_hls_qualities_play_at_the_payload_size(page: Any, batch: Any, key: str) -> None:
    _, results = batch
    payload = results[key]["payload"]
    page.execute_script("mwReport.open(arguments[0])", _id(results[key]))
    page.execute_script(
        "document.querySelectorAll('#viewer video').forEach(v => v.play()"
        ".catch(e => mwReport.errors.push({play: String(e)})))"
    )
    played = wait_for(
        page,
        "const vs = [...document.querySelectorAll('#viewer video')];"
        "const far = v => v.ended || v.currentTime >= Math.min(2, v.duration - 0.1);"
        "return vs.length === 2 && vs.every(far) && vs.map(v => ({q: v.dataset.quality,"
        " t: v.currentTime, d: v.duration, w: v.videoWidth, h: v.videoHeight, e: v.error}));",
    )
    errors = page.execute_script("return mwReport.errors")
    assert played, (key, errors)
    # hls.js notes, without failing, when it steps over the gap before a stream's first frame
    # and when it nudges playback on after a stall (a busy machine); anything else it reports,
    # fatal or not, and any error of the video element, is a playback failure.
    assert [e for e in errors if e.get("details") not in STALL_NOTES] == [], errors
    sizes = {p["q"]: (p["w"], p["h"]) for p in played}
    width, height = payload["width"], payload["height"]
    assert sizes == {"high": (width, height), "low": low_size(width, height)}
    if key == "videos/hd_1080p.mp4":
        assert sizes == {"high": (1920, 1080), "low": (1280, 720)}
        screenshot(page, "report-video.png")
    if key == "videos/rotated.mp4":
        assert height > width


def test_hls_of_a_10bit_source_is_8bit_yuv420p(batch: Any) -> None:
    """Chrome cannot play H.264 High 10: the renditions of a 10-bit source must be 8-bit."""
    dest, results = batch
    payload = results["videos/hevc_10bit.mp4"]["payload"]
    for quality in ("high_quality", "low_quality"):
        index = payload["hls_segments"][quality]["index"]
        first = next(ln for ln in index.splitlines() if ln and not ln.startswith("#"))
        with av.open(str(dest / first)) as container:
            stream = container.streams.video[0]
            assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
            assert "10" not in (stream.codec_context.profile or "")


def test_the_waveform_draws_from_the_gzipped_peaks(page: Any, batch: Any) -> None:
    _, results = batch
    page.execute_script("mwReport.open(arguments[0])", _id(results[VIDEOS[0]]))
    samples = wait_for(page, "return document.querySelector('canvas.waveform').dataset.samples;")
    assert samples and abs(int(samples) - 2000) < 100  # 2 s of peaks at 1 kHz, inflated
    inked = page.execute_script(
        "const c = document.querySelector('canvas.waveform');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;"
        "for (let i = 0; i < d.length; i += 4) if (d[i] < 200 || d[i + 1] < 200) n++;"
        "return n / (c.width * c.height);"
    )
    # The tone rises from silence to near full scale: about half the canvas is ink.
    assert 0.2 < inked < 0.8


def test_a_slide_opens_at_its_size_and_loads_full_resolution_tiles(page: Any, batch: Any) -> None:
    _, results = batch
    payload = results["slides/pyramid.tiff"]["payload"]
    page.execute_script("mwReport.open(arguments[0])", _id(results["slides/pyramid.tiff"]))
    opened = wait_for(page, "return mwReport.tiles && mwReport.tiles.opened;")
    assert opened == {"width": payload["width"], "height": payload["height"]}
    page.execute_script(
        "const v = mwReport.osd; v.viewport.zoomTo(v.viewport.imageToViewportZoom(1), null, true);"
    )
    top = math.ceil(math.log2(max(payload["width"], payload["height"])))
    tiles = wait_for(
        page,
        "const t = mwReport.tiles; return mwReport.osd.world.getItemAt(0).getFullyLoaded()"
        " && t.max_level_loaded === arguments[0] && t;",
        top,
    )
    assert tiles and tiles["failed"] == 0 and tiles["loaded"] > 0, page.execute_script(
        "return [mwReport.tiles, mwReport.errors]"
    )
    screenshot(page, "report-slide.png")


def test_report_of_a_results_file_reads_the_folder_it_is_told(batch: Any, tmp_path: Path) -> None:
    """`report RESULTS --files DEST`: a page elsewhere reaches DEST's files by relative paths."""
    dest, results = batch
    lines = tmp_path / "results.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in results.values()))
    page = dest / "pages" / "again.html"
    argv = ["report", str(lines), "--files", str(dest), "--out", str(page)]
    assert run_guarded(lambda: cli.main(argv, "mediaworker", standalone_mode=False)) == 0
    data = page_data(page)
    thumbs = [item["thumb"] for item in data["items"] if item["status"] == "ok"]
    assert len(thumbs) == len(results) - len(BROKEN)
    assert all(t.startswith("../data/") and (page.parent / t).is_file() for t in thumbs)
    assert data["signed_until"] is None


def test_verify_writes_the_report_of_what_it_checked(batch: Any, tmp_path: Path) -> None:
    """Renditions uploaded, sources forgotten: every item is missing assets, and the page
    groups them with what to do."""
    dest, results = batch
    config = tmp_path / "mediaworker.toml"
    config.write_text(
        f'[integrations.shelf]\nprovider = "local"\nroot = "{dest}"\nreadonly = true\n'
    )
    page = dest / "verified.html"
    argv = ["verify", "shelf", "--from-file", str(dest / "registration.jsonl"), "--json"]
    argv += ["--config", str(config), "--report", str(page)]
    with redirect_stdout(StringIO()):
        assert run_guarded(lambda: cli.main(argv, "mediaworker", standalone_mode=False)) == 1
    data = page_data(page)
    assert data["counts"]["status"] == {"missing_assets": len(results) - len(BROKEN)}
    assert data["reasons"]["missing_assets"]["fix"] == REASONS["missing_assets"].fix
    assert all(i["problems"][0]["key"] == i["key"] for i in data["items"])
    assert all(i["thumb"] and (dest / i["thumb"]).is_file() for i in data["items"])
    assert data["run"]["command"] == "verify"


def test_a_bucket_report_opened_from_disk_shows_signed_thumbnails_and_tiles(
    make_integration, tmp_path: Path
) -> None:
    """A bucket's page needs no server: signed URLs reach the files, even from file://."""
    settings, integration = make_integration("s3")
    storage = open_writable(integration, settings)
    slides = generate_slides(tmp_path / "slides")
    storage.write("slides/pyramid.tiff", slides["tiled_tiff"])
    config = write_config(tmp_path / "mediaworker.toml", integration)
    page = tmp_path / "bucket.html"
    argv = ["process", integration.name, "slides/pyramid.tiff", "--config", str(config)]
    argv += ["--report", str(page)]
    assert run_guarded(lambda: cli.main(argv, "mediaworker", standalone_mode=False)) == 0
    with chromium() as driver:
        driver.get(page.as_uri())
        assert "signed URLs valid until" in driver.find_element("id", "access").text
        width = wait_for(driver, "const i = document.querySelector('#sheet img');"
                                 "return i.complete && i.naturalWidth;")  # fmt: skip
        assert width and width > 0
        item = driver.execute_script("return mwReport.data.items[0]")
        driver.execute_script("mwReport.open(arguments[0])", item["id"])
        payload = item["payload"]
        opened = wait_for(driver, "return mwReport.tiles && mwReport.tiles.opened;")
        assert opened == {"width": payload["width"], "height": payload["height"]}
        tiles = wait_for(driver, "return mwReport.osd.world.getItemAt(0).getFullyLoaded()"
                                 " && mwReport.tiles;")  # fmt: skip
        assert tiles and tiles["loaded"] > 0 and tiles["failed"] == 0, tiles
