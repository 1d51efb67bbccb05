"""Soak: a long mixed batch through real workers under storage faults and random SIGKILLs.

    .venv/bin/python bench/soak.py --broker redis --items 2000
    .venv/bin/python bench/soak.py --broker embedded --items 500

Starts moto's S3 server with the tests' fault proxy in front of it (a share of requests answered
503 SlowDown or reset), a private redis-server (`--broker redis`) or nothing (the embedded
broker), uploads a mixed batch (mostly small images, some videos and slides) and sends it. Two
`mediaworker worker --concurrency 1` processes consume it while a chaos loop SIGKILLs, at
random, a pool process or a whole worker (which it restarts, as a supervisor would). Then:

- every item has exactly one `ok` result, one `metadata.json` and every asset it lists;
- a sample of items run again on a clean worker (no faults, no kills) gives byte-identical
  outputs;
- no scratch folder is left once the last workers stopped and one more worker started;
- the RSS of each worker process over its life (first tenth of its samples vs last tenth).

Prints a report and writes it as JSON to `bench/.work/soak-<broker>.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import boto3  # noqa: E402
from bench_queue import redis_server  # noqa: E402
from faultproxy import FaultPlan, _Proxy, fault_proxy  # noqa: E402
from servers import moto_server  # noqa: E402
from soak_support import Fleet, RssLog, media_files, summarize_rss  # noqa: E402

from worker.assets import Asset, Series, iter_keys  # noqa: E402
from worker.cli.queue import result_of  # noqa: E402
from worker.config import load_settings  # noqa: E402
from worker.items import Item  # noqa: E402
from worker.layout import SlotLayout  # noqa: E402
from worker.queue import producer_app, send_items  # noqa: E402

BUCKET = "soak"
_Proxy.handle_error = lambda self, request, address: None  # a reset it made is no news
ENV = {
    "AWS_ACCESS_KEY_ID": "soak",
    "AWS_SECRET_ACCESS_KEY": "soak",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def write_config(root: Path, broker_url: str | None, proxy: str, moto: str) -> Path:
    broker = f'url = "{broker_url}"\nvisibility_timeout_seconds = 60\n' if broker_url else ""
    s3 = f'provider = "s3"\nbucket = "{BUCKET}"\nregion = "us-east-1"\n'
    config = root / "soak.toml"
    config.write_text(
        f'[broker]\n{broker}state_dir = "{root / "state"}"\n'
        f'queue_prefix = "soak{uuid.uuid4().hex[:6]}-"\n'
        f'[worker]\nwork_dir = "{root / "work"}"\nretry_backoff_seconds = 0.5\nmax_retries = 6\n'
        f"[limits]\nitem_timeout_seconds = 45\nqueue_timeout_seconds = {{images = 45}}\n"
        f'[integrations.soak]\n{s3}endpoint_url = "{proxy}"\n'
        f'[integrations.clean]\n{s3}endpoint_url = "{moto}"\n'
    )
    return config


def upload_batch(moto: str, media: dict[str, Path], count: int) -> list[Item]:
    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    images = sorted(n for n in media if n.startswith("image_"))
    items = []
    for i in range(count):
        name = "video" if i % 20 == 7 else "slide" if i % 50 == 13 else images[i % len(images)]
        key = f"in/{i:05d}{media[name].suffix}"
        s3.upload_file(str(media[name]), BUCKET, key)
        kind = name.split("_")[0]  # typed, as a registering backend sends them: no sniffing
        items.append(Item(integration="soak", key=key, item_id=f"soak-{i:05d}", type=kind))
    return items


def chaos(
    fleet: Fleet, pending: Any, rng: random.Random, rss: RssLog, until: float, kill: bool
) -> dict:
    """Kill at random until every result is in; sample memory meanwhile."""
    kills = {"pool_process": 0, "whole_worker": 0}
    next_kill = time.monotonic() + rng.uniform(3, 8)
    while pending() and time.monotonic() < until:
        rss.sample(fleet)
        if kill and time.monotonic() >= next_kill:
            if rng.random() < 0.7 and fleet.kill_pool_process(rng):
                kills["pool_process"] += 1
            elif fleet.kill_whole_worker(rng):
                kills["whole_worker"] += 1
            next_kill = time.monotonic() + rng.uniform(6, 15)
        time.sleep(1.0)
    return kills


def check_outputs(moto: str, items: list[Item], results: list[Any], prefix: str) -> dict:
    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1")
    statuses: dict[str, int] = {}
    for result in results:
        statuses[result.status.value] = statuses.get(result.status.value, 0) + 1
    missing_marker, missing_assets = [], []
    for item in items:
        layout = SlotLayout(prefix, item.item_id, item.slot)
        try:
            body = s3.get_object(Bucket=BUCKET, Key=layout.metadata_key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            missing_marker.append(item.key)
            continue
        listed = set(iter_keys(_parse_assets(json.loads(body)["assets"])))
        stored = set(_keys(s3, layout.key("")))
        missing_assets += sorted(listed - stored)[:1]
    return {"statuses": statuses, "missing_metadata": missing_marker[:5],
            "items_missing_assets": len(missing_assets)}  # fmt: skip


def _parse_assets(raw: list[Any]) -> list[Asset]:
    """A marker's compact asset list: plain keys and numbered series."""
    return [entry if isinstance(entry, str) else Series.model_validate(entry) for entry in raw]


def _keys(s3: Any, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _slot_bytes(s3: Any, layout: SlotLayout) -> dict[str, bytes]:
    base = layout.key("")
    return {k[len(base):]: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()
            for k in _keys(s3, base) if not k.endswith("metadata.json")}  # fmt: skip


def clean_rerun(fleet: Fleet, settings: Any, moto: str, sample: list[Item], prefix: str) -> dict:
    """The sample again under new ids, on a fresh worker, without faults; compare bytes."""
    clean = [i.model_copy(update={"integration": "clean", "item_id": f"clean-{i.item_id}"})
             for i in sample]  # fmt: skip
    fleet.start(1)
    sent = send_items(clean, settings)
    app = producer_app(settings)
    results = [result_of(app.AsyncResult(s.task_id), s.item, 600) for s in sent]
    fleet.stop_all()
    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1")
    differing = []
    for soaked, again, result in zip(sample, clean, results, strict=True):
        a = _slot_bytes(s3, SlotLayout(prefix, soaked.item_id, soaked.slot))
        b = _slot_bytes(s3, SlotLayout(prefix, again.item_id, again.slot))
        if result.status.value != "ok" or a != b or not a:
            names = sorted(n for n in a.keys() | b.keys() if a.get(n) != b.get(n))
            differing.append(f"{soaked.key}: {len(names)} files differ, e.g. {names[:3]}")
    return {"sample": len(sample), "identical": len(sample) - len(differing),
            "differing": differing[:5]}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = REPO / "bench" / ".work" / f"soak-{args.broker}{'-nokills' if args.no_kills else ''}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    os.environ.update(ENV)
    rng = random.Random(args.seed)
    media = media_files(root / "media")
    plan = FaultPlan(share_503=args.faults / 2, share_reset=args.faults / 2, seed=args.seed)
    with moto_server(root) as moto, fault_proxy(moto, plan) as (proxy, stats):
        items = upload_batch(moto, media, args.items)
        broker = redis_server(root) if args.broker == "redis" else contextlib.nullcontext()
        with broker as broker_url:
            config = write_config(root, broker_url, proxy, moto)
            settings = load_settings(config)
            prefix = settings.integration("soak").prefix
            fleet = Fleet(config, root / "logs")
            fleet.start(2)
            started = time.monotonic()
            sent = send_items(items, settings)
            app = producer_app(settings)
            waiting = {s.task_id for s in sent}

            def pending() -> bool:
                waiting.difference_update([t for t in list(waiting) if app.AsyncResult(t).ready()])
                return bool(waiting)

            rss = RssLog()
            kills = chaos(fleet, pending, rng, rss, started + args.timeout, not args.no_kills)
            elapsed = time.monotonic() - started
            results = [result_of(app.AsyncResult(s.task_id), s.item, 5) for s in sent]
            fleet.stop_all()
            report: dict[str, Any] = {
                "broker": args.broker, "items": len(items), "seconds": round(elapsed, 1),
                "kills": kills, "worker_starts": fleet.starts, "faults": dict(stats),
                "retries_logged": fleet.log_count("transient fault, retry"),
                "redeliveries_logged": fleet.log_count("an earlier one did not finish"),
                "done_more_than_once": fleet.done_more_than_once(items),
            }  # fmt: skip
            report.update(check_outputs(moto, items, results, prefix))
            sample = rng.sample(items, min(args.sample, len(items)))
            report["scratch_after_stop"] = _scratch(root)
            report["clean_rerun"] = clean_rerun(fleet, settings, moto, sample, prefix)
            report["scratch_after_next_start"] = _scratch(root)
            report["rss"] = summarize_rss(rss)
    return report


def _scratch(root: Path) -> int:
    work = root / "work"
    return sum(1 for _ in work.iterdir()) if work.is_dir() else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", choices=["redis", "embedded"], default="redis")
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--faults", type=float, default=0.10, help="share of S3 requests")
    parser.add_argument("--sample", type=int, default=40, help="items re-run clean")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--timeout", type=float, default=5400)
    parser.add_argument("--no-kills", action="store_true", help="faults only, no SIGKILLs")

    args = parser.parse_args()
    report = run(args)
    tag = "-nokills" if args.no_kills else ""
    out = REPO / "bench" / ".work" / f"soak-{args.broker}{tag}.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
