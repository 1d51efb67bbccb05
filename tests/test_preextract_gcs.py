"""`mediaworker preextract SOURCE --out INTEGRATION` into a GCS integration (fake-gcs-server):
the layout and `registration.jsonl` land under the prefix, `audio_peaks.gz` keeps its
`Content-Encoding: gzip`, and a read-only integration on the same bucket then verifies clean."""

from __future__ import annotations

import json
from pathlib import Path

from ops_support import write_config
from PIL import Image
from readonly_support import run_cli
from servers import gcs_admin

from fixtures.videos import CLIPS, write_clip
from worker.layout import registration_key


def test_preextract_into_gcs_then_verify_read_only(make_integration, tmp_path: Path) -> None:
    _, integration = make_integration("gcs", prefix="prepared")
    source = tmp_path / "source"
    (source / "photos").mkdir(parents=True)
    Image.new("RGB", (640, 480), (0, 120, 255)).save(source / "photos" / "blue sky #1.jpg")
    write_clip(source / "videos" / "clip.mp4", CLIPS["h264_aac_mp4"])
    readonly = integration.model_copy(update={"name": "ro", "readonly": True})
    config = write_config(tmp_path / "mediaworker.toml", integration, readonly)

    code, results = run_cli(
        "preextract", str(source), "--out", integration.name, "--jobs", "1", "--config", str(config)
    )

    assert code == 0, results
    assert {(r["key"], r["status"]) for r in results} == {
        ("photos/blue sky #1.jpg", "ok"),
        ("videos/clip.mp4", "ok"),
    }
    bucket = gcs_admin(integration.endpoint_url or "").bucket(integration.bucket)
    registration = bucket.blob(registration_key("prepared")).download_as_bytes().decode()
    payloads = {p["storage_key"]: p for p in map(json.loads, registration.splitlines())}
    assert set(payloads) == {"photos/blue sky #1.jpg", "videos/clip.mp4"}
    video = payloads["videos/clip.mp4"]
    assert video["storage_thumbnail_key"].startswith("prepared/")
    peaks = bucket.get_blob(video["storage_audio_peaks_key"])
    assert peaks is not None and peaks.content_encoding == "gzip"
    for key in [a for r in results for a in r["assets"] if isinstance(a, str)]:
        assert bucket.get_blob(key) is not None, key

    # The sources themselves are uploaded by the customer; then the read-only check passes.
    for path in source.rglob("*.*"):
        bucket.blob(path.relative_to(source).as_posix()).upload_from_filename(str(path))
    code, checked = run_cli("verify", "ro", *payloads, "--config", str(config))
    assert code == 0 and {r["status"] for r in checked} == {"ok"}, checked
