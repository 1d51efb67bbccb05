"""What keeping in-flight messages costs: kombu's `filesystem://` transport (deletes a message
when it hands it out) against mediaworker's embedded transport (moves it to `inflight/`, deletes
it on acknowledgement; publishing fsyncs), in one run.

    .venv/bin/python bench/bench_embedded_broker.py [--messages 500]

Per transport: publish N messages of a task's size, then get and acknowledge each; prints
microseconds per message for each half and the ratio of the totals.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from kombu import Connection

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import worker.embedded_broker  # noqa: E402, F401  (registers the mediaworker:// transport)

BODY = {"integration": "demo", "key": "in/" + "x" * 60 + ".jpg", "item_id": "0" * 36, "slot": "0"}


def run(scheme: str, root: Path, count: int) -> tuple[float, float]:
    for name in ("queue", "control"):
        (root / name).mkdir(parents=True)
    options = {"data_folder_in": str(root / "queue"), "data_folder_out": str(root / "queue"),
               "control_folder": str(root / "control")}  # fmt: skip
    with Connection(f"{scheme}://localhost/", transport_options=options) as conn:
        queue = conn.SimpleQueue(f"bench-{scheme}", no_ack=False)
        start = time.perf_counter()
        for _ in range(count):
            queue.put(BODY)
        put = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(count):
            queue.get(timeout=5).ack()
        get = time.perf_counter() - start
    return put / count * 1e6, get / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    args = parser.parse_args()
    totals = {}
    with tempfile.TemporaryDirectory(dir=REPO / "bench") as tmp:
        for scheme in ("filesystem", "mediaworker"):
            put, get = run(scheme, Path(tmp) / scheme, args.messages)
            totals[scheme] = put + get
            print(f"{scheme:12} publish {put:8.0f} us/message   get+ack {get:8.0f} us/message")
    ratio = totals["mediaworker"] / totals["filesystem"]
    print(f"mediaworker / filesystem, per message sent and handled: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
