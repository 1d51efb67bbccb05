"""The item tasks, one per queue; producers call them by name (see docs/queue.md).

Each takes one argument, the item as a SPEC 3 mapping, and returns the SPEC 7 result object.
Time limits come from the app's `task_annotations` (per queue, from the settings); retries,
timeouts and the `poison` cap live in `tasks.ItemTask`.
"""

from __future__ import annotations

from typing import Any

from tasks import ItemTask
from worker.celery_app import TASK_NAMES, app


@app.task(bind=True, base=ItemTask, name=TASK_NAMES["images"], queue_label="images")
def process_image(self: ItemTask, item: dict[str, Any]) -> dict[str, Any]:
    return self.run_item(item)


@app.task(bind=True, base=ItemTask, name=TASK_NAMES["videos"], queue_label="videos")
def process_video(self: ItemTask, item: dict[str, Any]) -> dict[str, Any]:
    return self.run_item(item)


@app.task(bind=True, base=ItemTask, name=TASK_NAMES["slides"], queue_label="slides")
def process_slide(self: ItemTask, item: dict[str, Any]) -> dict[str, Any]:
    return self.run_item(item)
