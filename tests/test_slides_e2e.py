"""`mediaworker process` of a MIRAX slide on real servers: its folder is found by listing and
fetched whole, and the layout of SPEC 4.3 is written (S3 through moto's server, Azure through
Azurite, GCS through fake-gcs-server). A refused listing fails as `permission_denied`, naming
s3:ListBucket on S3 and storage.objects.list on GCS."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from faultproxy import FaultPlan, fault_proxy
from ops_support import run_cli, write_config
from PIL import Image
from servers import moto_enforcing_iam
from slide_support import deep_zoom_tiles, reader_without_listing

from fixtures.slides import MARKS_LAYOUT, generate_slides
from worker.assets import Series, iter_keys
from worker.config import Integration
from worker.items import default_item_id
from worker.layout import Rel, SlotLayout
from worker.payloads import ItemResult
from worker.storage import open_writable
from worker.storage.base import Storage


@pytest.fixture(scope="module")
def mirax(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_slides(tmp_path_factory.mktemp("slides"))["mirax"]


def _upload_slide(storage: Storage, mrxs: Path, parent: str) -> str:
    """The .mrxs and every file of its folder, as a customer's bucket holds them."""
    for path in [mrxs, *sorted(p for p in mrxs.with_suffix("").rglob("*") if p.is_file())]:
        storage.write(f"{parent}/{path.relative_to(mrxs.parent).as_posix()}", path)
    return f"{parent}/{mrxs.name}"


def _parent(integration: Integration) -> str:
    return f"{integration.azure_container}/scans" if integration.provider == "azure" else "scans"


@pytest.mark.parametrize("kind", ["s3", "azure", "gcs"])
def test_process_mirax_fetches_its_folder_and_writes_the_slide_layout(
    kind: str, make_integration, mirax: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, integration = make_integration(kind)
    storage = open_writable(integration, settings)
    key = _upload_slide(storage, mirax, _parent(integration))
    config = write_config(tmp_path / "mediaworker.toml", integration)

    code, out, err = run_cli(
        capsys, "process", integration.name, key, "--json", "--config", str(config)
    )

    assert code == 0, err
    [result] = [json.loads(line) for line in out.splitlines()]
    assert (result["status"], result["type"]) == ("ok", "slide"), result
    payload = result["payload"]
    assert (payload["width"], payload["height"]) == (2048, 1536)
    assert payload["level_count"] == 5
    layout = SlotLayout(integration.prefix, default_item_id(key))
    assert payload["storage_dzi_key"] == layout.key(Rel.DZI)
    assets = ItemResult.model_validate(result).assets
    levels = [a for a in assets if isinstance(a, Series)]
    # One entry per Deep Zoom level, however many tiles it holds.
    assert [a.prefix for a in levels] == sorted(
        layout.key(Rel.tile_level_dir(level)) for level in range(len(levels))
    )
    tiles = [k for k in iter_keys(assets) if k.startswith(layout.key(Rel.TILES_DIR))]
    assert len(tiles) == payload["tile_count"] == deep_zoom_tiles(2048, 1536)
    assert {k.rsplit("/", 1)[1] for k in payload["storage_associated_keys"].values()} == {
        f"{name}.jpg" for name in MARKS_LAYOUT.associated
    }
    for asset in iter_keys(assets):
        assert storage.head(asset).size > 0
    thumbnail = Image.open(io.BytesIO(storage.read_bytes(layout.key(Rel.THUMBNAIL))))
    assert thumbnail.size == (267, 200)  # 2048x1536 fitted into 356x200
    red = MARKS_LAYOUT.marks[0]
    centre = ((red.x + red.w // 2) * 267 // 2048, (red.y + red.h // 2) * 200 // 1536)
    assert all(abs(a - b) <= 30 for a, b in zip(thumbnail.getpixel(centre), red.rgb, strict=True))
    assert json.loads(storage.read_bytes(layout.metadata_key))["payload"] == payload


def test_listing_refused_by_the_s3_server_names_s3_listbucket(
    make_integration,
    moto_endpoint: str,
    mirax: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings, integration = make_integration("s3")
    key = _upload_slide(open_writable(integration, settings), mirax, "scans")
    reader = reader_without_listing(moto_endpoint, integration, "scans")
    config = write_config(tmp_path / "mediaworker.toml", integration)

    with moto_enforcing_iam(moto_endpoint):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", reader[0])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", reader[1])
        code, out, _ = run_cli(
            capsys, "process", integration.name, key, "--json", "--config", str(config)
        )

    [result] = [json.loads(line) for line in out.splitlines()]
    assert code == 1
    assert (result["status"], result["reason"]) == ("failed", "permission_denied")
    assert "s3:ListBucket" in result["message"] and "scans/marks/" in result["message"]
    layout = SlotLayout(integration.prefix, default_item_id(key))
    assert not open_writable(integration, settings).exists(layout.metadata_key)


def test_listing_refused_on_gcs_names_storage_objects_list(
    make_integration, mirax: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """fake-gcs-server has no IAM: the fault proxy in front of it refuses every listing (403)."""
    settings, integration = make_integration("gcs")
    key = _upload_slide(open_writable(integration, settings), mirax, "scans")
    with fault_proxy(integration.endpoint_url or "", FaultPlan(forbidden=("prefix=",))) as (url, _):
        proxied = integration.model_copy(update={"endpoint_url": url})
        config = write_config(tmp_path / "mediaworker.toml", proxied)
        code, out, _ = run_cli(
            capsys, "process", proxied.name, key, "--json", "--config", str(config)
        )
    [result] = [json.loads(line) for line in out.splitlines()]
    assert code == 1
    assert (result["status"], result["reason"]) == ("failed", "permission_denied")
    assert "storage.objects.list" in result["message"]
    layout = SlotLayout(integration.prefix, default_item_id(key))
    assert not open_writable(integration, settings).exists(layout.metadata_key)
