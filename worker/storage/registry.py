"""The storage providers: one entry each, naming the backend class that knows everything about it.

A backend class (a `worker.storage.base.Storage`) is the only place a provider is spelled out:
its configuration rules (`configure`), how it is opened (`from_integration`), reading, writing,
listing and signing, and the capabilities `mediaworker check` and `mediaworker policy` use
(`read_cors`, `denied_fix`, `cors_fix`, `setup`, ...). Config validation, `check`, `policy`,
`preextract`, `reprocess` and the report ask the class found here; nothing else names a provider.

Entries name their class as `module:Class` and it is imported on first use, so a configuration
that uses only S3 never imports the Azure or Google libraries. docs/extending.md says how to add
one; the provider table of docs/configuration.md is checked against this one by the tests.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.storage.base import Storage


@dataclass(frozen=True)
class ProviderEntry:
    name: str
    """The `provider` value of an `[integrations.NAME]` table."""
    backend: str
    """`module:Class` of the backend."""
    what: str
    """One line for the docs' table of providers."""
    loggers: tuple[str, ...] = ()
    """The SDK's loggers that write request details (signatures) at DEBUG: kept at WARNING."""


_BOTO = ("botocore",)

PROVIDERS: dict[str, ProviderEntry] = {
    entry.name: entry
    for entry in (
        ProviderEntry(
            "local",
            "worker.storage.local:LocalStorage",
            "a folder that stands for a bucket (demos, tests, `preextract` output)",
        ),
        ProviderEntry("aws", "worker.storage.s3:S3Storage", "Amazon S3", _BOTO),
        ProviderEntry(
            "wasabi",
            "worker.storage.s3:S3Storage",
            "Wasabi (S3 API; the endpoint is derived from `region`)",
            _BOTO,
        ),
        ProviderEntry(
            "s3",
            "worker.storage.s3:S3Storage",
            "any S3-compatible store (MinIO, Ceph, ...; needs `endpoint_url`)",
            _BOTO,
        ),
        ProviderEntry(
            "azure",
            "worker.storage.azure:AzureStorage",
            "Azure Blob Storage",
            ("azure.core.pipeline.policies.http_logging_policy",),
        ),
        ProviderEntry("gcs", "worker.storage.gcs:GcsStorage", "Google Cloud Storage (JSON API)"),
    )
}


LOCAL_FOLDER = "local"
"""The provider of a folder given on the command line (`preextract DEST`, `report --files`)."""


def sdk_loggers() -> list[str]:
    """Every provider's SDK loggers that must stay above DEBUG (see `ProviderEntry.loggers`)."""
    return sorted({name for entry in PROVIDERS.values() for name in entry.loggers})


def unknown_provider(value: object) -> str:
    """The message for a `provider` no entry has, naming the ones that exist."""
    return f"unknown provider {value!r}; expected one of {', '.join(PROVIDERS)}"


@cache
def backend_class(provider: str) -> type[Storage]:
    """The backend class of a provider; `ValueError` (a configuration error) for an unknown one."""
    entry = PROVIDERS.get(provider)
    if entry is None:
        raise ValueError(unknown_provider(provider))
    module, _, name = entry.backend.partition(":")
    try:
        loaded = importlib.import_module(module)
    except ImportError as exc:  # a configuration error, said in one line, not a traceback
        raise ValueError(
            f"provider {provider!r} needs the Python package {exc.name!r}, which is not"
            " installed; reinstall mediaworker with its dependencies"
        ) from None
    backend: type[Storage] = getattr(loaded, name)
    return backend
