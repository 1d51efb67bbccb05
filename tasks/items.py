"""The item tasks, one per media kind and its queue, named in the kind's registry entry
(`worker.kinds.registry`); producers call them by name (see docs/queue.md).

Each takes one argument, the item as a SPEC 3 mapping, and returns the SPEC 7 result object.
Time limits come from the app's `task_annotations` (per queue, from the settings); retries,
timeouts and the `poison` cap live in `tasks.ItemTask`.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from tasks import ItemTask
from worker.celery_app import app
from worker.kinds import MediaKind
from worker.kinds.registry import KINDS


def _item_task(kind: MediaKind) -> Task:
    def run(self: ItemTask, item: dict[str, Any]) -> dict[str, Any]:
        return self.run_item(item)

    run.__name__ = run.__qualname__ = f"process_{kind.name}"
    run.__module__ = __name__
    return app.task(bind=True, base=ItemTask, name=kind.task, queue_label=kind.queue)(run)


TASKS: dict[str, Task] = {kind.name: _item_task(kind) for kind in KINDS}
"""The task of each kind, by kind name."""
process_image = TASKS["image"]
"""The image task, for callers that run one task in process (tests, benches)."""
