"""The trust boundary against a hostile bucket (`fixtures/hostile.py`, `hostile_assets.py`).

Each batch runs `mediaworker` as its own process under an address-space cap (`prlimit
--as=6000000000`), as a worker host would, and for every case checks the answer (reason code,
exit code) and what must never happen: the process killed, a traceback on stderr, a file of the
OUTSIDE folder read (its access times are set in the past, so any read moves them) or written,
its marker in any output or message. Peak memory comes from the kernel's accounting of the
process (`wait4`). MIRAX, playlist and id cases run against moto's S3 server too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from ops_support import run_cli
from recording_proxy import recording_proxy

from fixtures.hostile import CASES, MARKER, MARKER_BYTES, SLOW_CASE, Case, generate_hostile
from fixtures.hostile_assets import generate_tampered
from worker.items import default_item_id
from worker.layout import SlotLayout

ADDRESS_SPACE_CAP = 6_000_000_000
VERIFY_PEAK_LIMIT = 1024**3
DAY = 86400


@dataclass
class Run:
    code: int
    out: str
    err: str
    peak_bytes: int

    def lines(self) -> dict[str, dict]:
        return {line["key"]: line for line in map(json.loads, self.out.splitlines())}


def mediaworker(*argv: str, cwd: Path, until: float = 300) -> Run:
    """`mediaworker ARGV` in a child process capped at 6 GB of address space."""
    command = ["prlimit", f"--as={ADDRESS_SPACE_CAP}", sys.executable, "-m", "worker", *argv]
    out, err = cwd / "stdout", cwd / "stderr"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(command, cwd=cwd, stdout=o, stderr=e, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + until
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        assert time.monotonic() < deadline, "mediaworker did not finish"
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    run = Run(proc.returncode, out.read_text(), err.read_text(), usage.ru_maxrss * 1024)
    assert run.code in (0, 1, 2), f"killed by signal {-run.code}: {run.err[-2000:]}"
    assert "Traceback" not in run.err, run.err[-3000:]
    assert MARKER not in run.out and MARKER not in run.err
    return run


def write_config(path: Path, tables: dict[str, dict]) -> Path:
    lines = []
    for section, table in tables.items():
        lines.append(f"[{section}]")
        lines += [f"{name} = {json.dumps(value)}" for name, value in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder`: its access time, then its content hash (the access time is
    put back after hashing, so the next read by anyone still moves it)."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()]
    state = {}
    for path in files:
        before = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        state[str(path.relative_to(folder))] = (digest, before.st_atime_ns)
    return state


def age_access_times(folder: Path) -> None:
    """Access two days ago, change three days ago: with `relatime` the next read moves it."""
    now = time.time()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.utime(path, (now - 2 * DAY, now - 3 * DAY))


def outputs_hold_marker(root: Path) -> list[str]:
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    return [str(p) for p in files if MARKER_BYTES in p.read_bytes()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("hostile")
    paths = generate_hostile(base)
    age_access_times(paths["outside"])
    probe = paths["outside"] / "secret.txt"
    before = probe.stat().st_atime_ns
    probe.read_bytes()
    assert probe.stat().st_atime_ns != before, "this filesystem does not track reads"
    age_access_times(paths["outside"])
    return {**paths, "base": base}


@pytest.fixture()
def guarded_outside(corpus: dict[str, Path]) -> Iterator[Path]:
    """OUTSIDE is neither read nor written while the test runs."""
    before = snapshot(corpus["outside"])
    yield corpus["outside"]
    assert snapshot(corpus["outside"]) == before


def local_config(corpus: dict[str, Path], **limits: int) -> Path:
    tables = {
        "integrations.h": {"provider": "local", "root": str(corpus["bucket"])},
        "worker": {"work_dir": str(corpus["base"] / "work")},
    }
    if limits:
        tables["limits"] = dict(limits)
    return write_config(corpus["base"] / f"local-{len(limits)}.toml", tables)


def check_case(line: dict, case: Case, root: Path) -> None:
    """The reason code, a message that names no host path, no commit marker when failed."""
    assert line["reason"] == case.reason, (case.name, line["message"])
    assert line["status"] == ("ok" if case.reason is None else "failed"), case.name
    assert "/tmp" not in line["message"] and str(Path.home()) not in line["message"], line
    assert re.search(r"\d+ bytes", line["message"]) is None, line  # no size of any file
    marker = root / SlotLayout("data", line["item_id"]).metadata_key
    assert marker.exists() == (case.reason is None), case.name


def test_hostile_sources_fail_alone_and_touch_nothing_outside(
    corpus: dict[str, Path], guarded_outside: Path
) -> None:
    config = local_config(corpus)
    by_type: dict[str, list] = {}
    for case in CASES:
        by_type.setdefault(case.type, []).append(case)
    for item_type, cases in by_type.items():
        run = mediaworker("process", "h", *[c.key for c in cases], "--type", item_type,
                          "--json", "--config", str(config), cwd=corpus["base"])  # fmt: skip
        assert run.code == 1
        assert run.peak_bytes < VERIFY_PEAK_LIMIT, run.peak_bytes
        lines = run.lines()
        for case in cases:
            check_case(lines[case.key], case, corpus["bucket"])
    assert outputs_hold_marker(corpus["bucket"] / "data") == []
    planted = corpus["bucket"] / "data" / default_item_id("images/planted.jpg") / "files" / "0"
    assert not (planted / "thumbnail.jpg").is_symlink()  # replaced, not written through
    assert not list((corpus["outside"] / "redirect").iterdir())
    assert not list((corpus["base"] / "work").iterdir())  # scratch removed


def test_slow_slide_times_out_and_the_run_goes_on(
    corpus: dict[str, Path], guarded_outside: Path
) -> None:
    work = corpus["base"] / "work"
    stale = work / "mw-999999999-left-by-a-killed-run"
    stale.mkdir(parents=True)
    config = local_config(corpus, item_timeout_seconds=3)
    run = mediaworker("process", "h", SLOW_CASE.key, "images/zz_good.jpg", "--json",
                      "--config", str(config), cwd=corpus["base"])  # fmt: skip
    lines = run.lines()
    assert lines[SLOW_CASE.key]["reason"] == "timeout"
    assert lines["images/zz_good.jpg"]["status"] == "ok"
    assert not stale.exists() and not list(work.iterdir())


def test_sigterm_removes_scratch(corpus: dict[str, Path]) -> None:
    config = local_config(corpus)
    work = corpus["base"] / "work"
    command = [sys.executable, "-m", "worker", "process", "h", SLOW_CASE.key, "--config",
               str(config)]  # fmt: skip
    proc = subprocess.Popen(command, cwd=corpus["base"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(work.glob("mw-*/source/*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(work.glob("mw-*")), "the item never started"
    assert all(p.stat().st_mode & 0o777 == 0o700 for p in work.glob("mw-*"))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in err
    assert not list(work.iterdir())


def test_tampered_assets_are_reported_in_bounded_memory(tmp_path: Path) -> None:
    root = tmp_path / "ro"
    cases = generate_tampered(root)
    config = write_config(tmp_path / "ro.toml", {
        "integrations.ro": {"provider": "local", "root": str(root), "readonly": True}
    })  # fmt: skip
    run = mediaworker("verify", "ro", "--json", "--config", str(config), cwd=tmp_path)
    assert run.code == 1
    assert run.peak_bytes < VERIFY_PEAK_LIMIT, run.peak_bytes
    results = {line["item_id"]: line for line in map(json.loads, run.out.splitlines())}
    assert len(results) == len(cases)  # one bad item never ends the batch
    for case in cases.values():
        line = results[default_item_id(case.key)]
        if case.asset is None:
            assert line["status"] == "ok", line["message"]
            continue
        assert line["status"] == "missing_assets", (case.name, line)
        asset = SlotLayout("data", default_item_id(case.key)).key(case.asset)
        problems = {p["key"]: p["problem"] for p in line["problems"]}
        assert case.why in problems.get(asset, ""), (case.name, problems)


# --- the S3 server: MIRAX, playlists, ids -----------------------------------------------------


def test_on_s3_hostile_sources_fail_and_refused_ids_send_nothing(
    corpus: dict[str, Path], moto_endpoint: str, make_integration, tmp_path: Path, capsys
) -> None:
    _, integ = make_integration("s3")
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    keys = [c.key for c in CASES if c.on_s3]
    for path in corpus["bucket"].rglob("*"):
        key = path.relative_to(corpus["bucket"]).as_posix()
        if path.is_file() and key.startswith(("mirax/", "video/", "images/zz_good")):
            client.upload_file(str(path), integ.bucket, key)
    before = {o["Key"] for o in client.list_objects_v2(Bucket=integ.bucket)["Contents"]}
    with recording_proxy(moto_endpoint) as proxy:
        config = write_config(tmp_path / "s3.toml", {f"integrations.{integ.name}": {
            "provider": "s3", "bucket": integ.bucket, "region": "us-east-1",
            "endpoint_url": proxy.url}})  # fmt: skip
        for item_id in ("a/../../victim", "../x", "x" * 129):
            argv = ["process", integ.name, "images/zz_good.jpg", "--item-id", item_id]
            code, _, err = run_cli(capsys, *argv, "--config", str(config))
            assert code == 2 and "item_id" in err and "Traceback" not in err
        assert proxy.requests == []  # refused before any request: no DELETE outside the item
        for item_type in ("video", "auto"):
            chosen = [c for c in CASES if c.on_s3 and (c.type == item_type)]
            argv = [*[c.key for c in chosen], "--type", item_type, "--json"]
            run = mediaworker("process", integ.name, *argv, "--config", str(config), cwd=tmp_path)
            lines = run.lines()
            for case in chosen:
                assert lines[case.key]["reason"] == case.reason, lines[case.key]
    after = {o["Key"] for o in client.list_objects_v2(Bucket=integ.bucket)["Contents"]}
    assert after == before  # failed items leave nothing, and no key escaped its folder
    assert not any(".." in key.split("/") for key in after)
    assert keys


def test_a_decoder_that_aborts_takes_only_its_sandbox_down(corpus: dict[str, Path]) -> None:
    """Without the header check, OpenSlide asks GLib for one 14.4 GB tile and GLib aborts: in
    the sandbox, that is this slide's `corrupt_media`, and this process goes on."""
    from worker.errors import CorruptMedia
    from worker.media.sandbox import probe_slide

    with pytest.raises(CorruptMedia, match="decoder crashed on this file"):
        probe_slide(corpus["bucket"] / "slides" / "huge_tile.tiff", 3 * 1024**3, 120)
