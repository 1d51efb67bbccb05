"""`mediaworker process` of a video on an S3 integration (moto's server, over HTTP) and a GCS one
(fake-gcs-server) writes the whole layout of SPEC 4.2, and `audio_peaks.gz` carries
`Content-Encoding: gzip` on the server."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import boto3
import pytest
from ops_support import run_cli, write_config
from servers import gcs_admin

from fixtures.videos import generate_videos
from worker.assets import Series, iter_keys
from worker.items import default_item_id
from worker.layout import Rel, SlotLayout
from worker.payloads import Metadata, segment_keys
from worker.storage import open_writable


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_videos(tmp_path_factory.mktemp("videos"))["h264_aac_mp4"]


def _on(kind: str, make_integration, clip: Path, key: str, tmp_path: Path):
    """An integration of `kind` holding the clip at `key`, and a config file naming it."""
    settings, integration = make_integration(kind)
    storage = open_writable(integration, settings)
    storage.write(key, clip)
    return integration, storage, write_config(tmp_path / "mediaworker.toml", integration)


def _server_encoding(kind: str, request: pytest.FixtureRequest, bucket: str, key: str) -> str:
    """The object's Content-Encoding as the server reports it to a plain client."""
    if kind == "gcs":
        blob = gcs_admin(request.getfixturevalue("gcs_endpoint")).bucket(bucket).get_blob(key)
        return str(blob.content_encoding)
    endpoint = request.getfixturevalue("moto_endpoint")
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    return str(s3.head_object(Bucket=bucket, Key=key)["ContentEncoding"])


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_process_video_writes_the_whole_layout(
    kind: str, make_integration, request: pytest.FixtureRequest, clip: Path, tmp_path: Path, capsys
) -> None:
    key = "videos/cam1/clip.mp4"
    integration, storage, config = _on(kind, make_integration, clip, key, tmp_path)

    code, out, err = run_cli(
        capsys, "process", integration.name, key, "--json", "--config", str(config)
    )

    assert code == 0, err
    [result] = [json.loads(line) for line in out.splitlines()]
    assert (result["status"], result["type"]) == ("ok", "video"), result
    payload = result["payload"]
    layout = SlotLayout(integration.prefix, default_item_id(key))
    listed = {info.key: info.size for info in storage.list(layout.root)}
    high = [k for k in listed if k.startswith(layout.key(Rel.sections_dir("high")))]
    low = [k for k in listed if k.startswith(layout.key(Rel.sections_dir("low")))]
    assert len(high) == len(low) == payload["visible_frames"] > 0
    assert all(k.endswith("." + payload["storage_sections_key_extension"]) for k in high)
    manifest = storage.read_bytes(payload["storage_frames_manifest_key"]).decode().splitlines()
    assert len(manifest) == payload["total_frames"]
    for quality in ("high_quality", "low_quality"):
        hls = payload["hls_segments"][quality]
        segments = segment_keys(hls["index"])
        assert segments and all(listed.get(k, 0) > 0 for k in segments)
        assert hls["bitrate"] > 0
    assert listed[layout.key(Rel.hls_index("high"))] > 0
    assert listed[layout.key(Rel.THUMBNAIL)] > 0

    peaks_key = payload["storage_audio_peaks_key"]
    assert _server_encoding(kind, request, integration.bucket, peaks_key) == "gzip"
    peaks = gzip.decompress(storage.read_bytes(peaks_key))
    assert len(peaks) > 0 and max(peaks) > 0  # the clip has sound: some peak is above silence

    # The marker lists every asset in the compact form: one entry per numbered series.
    marker = Metadata.model_validate_json(storage.read_bytes(layout.metadata_key))
    assert set(iter_keys(marker.assets)) == set(listed) - {layout.metadata_key}
    series = {(s.prefix, s.pattern): s.count for s in marker.assets if isinstance(s, Series)}
    segments = len(segment_keys(payload["hls_segments"]["high_quality"]["index"]))
    assert series == {
        (layout.key(Rel.sections_dir("high")), "%09d.png"): payload["visible_frames"],
        (layout.key(Rel.sections_dir("low")), "%09d.jpg"): payload["visible_frames"],
        (layout.key(Rel.segments_dir("high")), "%09d.ts"): segments,
        (layout.key(Rel.segments_dir("low")), "%09d.ts"): segments,
    }
    assert result["assets"] == [
        a if isinstance(a, str) else a.model_dump(mode="json") for a in marker.assets
    ]


def test_a_rerun_at_a_lower_fps_leaves_exactly_the_listed_assets(
    make_integration, clip: Path, tmp_path: Path, capsys
) -> None:
    key = "videos/cam2/clip.mp4"
    integration, storage, config = _on("s3", make_integration, clip, key, tmp_path)
    layout = SlotLayout(integration.prefix, default_item_id(key))

    def process(*extra: str) -> dict:
        code, out, err = run_cli(
            capsys, "process", integration.name, key, "--json", "--config", str(config), *extra
        )
        assert code == 0, err
        return json.loads(out.splitlines()[-1])

    first = process()
    second = process("--fps", "4")

    assert second["payload"]["visible_frames"] < first["payload"]["visible_frames"]
    marker = Metadata.model_validate_json(storage.read_bytes(layout.metadata_key))
    listed = {info.key for info in storage.list(layout.root)}
    assert listed - {layout.metadata_key} == set(iter_keys(marker.assets))
    high = layout.key(Rel.sections_dir("high"))
    assert len([k for k in listed if k.startswith(high)]) == second["payload"]["visible_frames"]
