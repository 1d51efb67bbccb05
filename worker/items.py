"""A registered item (SPEC section 3): the reference a task or a command line carries."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

ITEM_NAMESPACE = uuid.NAMESPACE_URL


class ItemType(StrEnum):
    AUTO = "auto"
    IMAGE = "image"
    VIDEO = "video"
    SLIDE = "slide"


def default_item_id(key: str) -> str:
    """A deterministic id from the key alone, so the same key always lands in the same place."""
    return str(uuid.uuid5(ITEM_NAMESPACE, key))


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    integration: str
    key: Annotated[str, Field(min_length=1)]
    item_id: str = ""
    slot: str = "0"
    type: ItemType = ItemType.AUTO
    fps: Annotated[float, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _fill_item_id(self) -> Item:
        if not self.item_id:
            object.__setattr__(self, "item_id", default_item_id(self.key))
        return self
