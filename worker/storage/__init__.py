"""Storage backends behind one interface (see `base`), and the factory that picks one."""

from __future__ import annotations

from worker.config import Integration, Provider, Settings
from worker.storage.base import ObjectInfo, ReadableStorage, ReadOnlyView, Storage

__all__ = ["ObjectInfo", "ReadOnlyView", "ReadableStorage", "Storage", "open_storage"]


def open_writable(integration: Integration, settings: Settings) -> Storage:
    """The backend of an integration, writable whatever its `readonly` flag (for `check`'s
    probe on a read-write integration and for tests); processing goes through `open_storage`."""
    if integration.provider == Provider.LOCAL:
        from worker.storage.local import LocalStorage

        assert integration.root is not None
        return LocalStorage(integration.root, integration.name)
    if integration.provider.is_s3:
        from worker.storage.s3 import S3Storage

        return S3Storage(integration, settings.worker)
    if integration.provider == Provider.AZURE:
        from worker.storage.azure import AzureStorage

        return AzureStorage(integration, settings.worker)
    if integration.provider == Provider.GCS:
        from worker.storage.gcs import GcsStorage

        return GcsStorage(integration, settings.worker)
    raise ValueError(f"integration {integration.name!r}: no backend for {integration.provider!r}")


def open_storage(integration: Integration, settings: Settings) -> Storage | ReadOnlyView:
    """A read-only integration gets a view with no write methods at all."""
    backend = open_writable(integration, settings)
    return ReadOnlyView(backend) if integration.readonly else backend
