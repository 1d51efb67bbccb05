"""Storage backends behind one interface (see `base`), found by provider in `registry`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.storage.base import ObjectInfo, ReadableStorage, ReadOnlyView, Storage
from worker.storage.registry import backend_class

if TYPE_CHECKING:
    from worker.config import Integration, Settings

__all__ = ["ObjectInfo", "ReadOnlyView", "ReadableStorage", "Storage", "open_storage"]


def open_writable(integration: Integration, settings: Settings) -> Storage:
    """The backend of an integration, writable whatever its `readonly` flag (for `check`'s
    probe on a read-write integration and for tests); processing goes through `open_storage`."""
    return backend_class(integration.provider).from_integration(integration, settings)


def open_storage(integration: Integration, settings: Settings) -> Storage | ReadOnlyView:
    """A read-only integration gets a view with no write method at all."""
    backend = open_writable(integration, settings)
    return ReadOnlyView(backend) if integration.readonly else backend
