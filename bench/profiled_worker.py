"""A worker whose pool process runs under cProfile (CPU clock), for `profile_queue.py`.

    python bench/profiled_worker.py OUT mediaworker|celery ARGS...

Profiling starts when the pool process starts and its stats are written to OUT.<pid>.prof
when it shuts down (the worker's warm shutdown, SIGTERM).
"""

from __future__ import annotations

import cProfile
import os
import sys
import time
from typing import Any

from celery import signals

OUT, PROGRAM, ARGS = sys.argv[1], sys.argv[2], sys.argv[3:]
PROFILE = cProfile.Profile(time.process_time)


@signals.worker_process_init.connect(weak=False)
def _start(**_: Any) -> None:
    PROFILE.enable()


@signals.worker_process_shutdown.connect(weak=False)
def _stop(**_: Any) -> None:
    PROFILE.disable()
    PROFILE.dump_stats(f"{OUT}.{os.getpid()}.prof")


if __name__ == "__main__":
    sys.argv = [PROGRAM, *ARGS]
    if PROGRAM == "mediaworker":
        from worker.cli import main
    else:
        from celery.__main__ import main
    main()
