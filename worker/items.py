"""A registered item (SPEC section 3): the reference a task or a command line carries.

Constructing an `Item` checks its `item_id`, `slot` and `key` (`worker.identifiers`), so no
refused value reaches storage: a bad one raises `InvalidItem` (exit 2 on the command line,
`invalid_item` through the queue)."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from worker.identifiers import check_key, check_name
from worker.kinds.registry import KIND_NAMES

ITEM_NAMESPACE = uuid.NAMESPACE_URL


ItemType = StrEnum(  # type: ignore[misc]
    "ItemType", {"AUTO": "auto"} | {name.upper(): name for name in KIND_NAMES}, module=__name__
)
"""`auto` (sniffed) or one of the registered media kinds (`worker.kinds.registry`)."""


def default_item_id(key: str) -> str:
    """A deterministic id from the key alone, so the same key always lands in the same place."""
    return str(uuid.uuid5(ITEM_NAMESPACE, key))


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    integration: str
    key: str
    item_id: str = ""
    slot: str = "0"
    type: ItemType = ItemType.AUTO
    fps: Annotated[float, Field(ge=0)] = 0

    @field_validator("key")
    @classmethod
    def _plain_key(cls, value: str) -> str:
        # InvalidItem is not a ValueError: pydantic lets it through as it is.
        return check_key(value)

    @field_validator("slot")
    @classmethod
    def _plain_slot(cls, value: str) -> str:
        return check_name("slot", value)

    @model_validator(mode="after")
    def _fill_item_id(self) -> Item:
        if not self.item_id:
            object.__setattr__(self, "item_id", default_item_id(self.key))
        check_name("item_id", self.item_id)
        return self
