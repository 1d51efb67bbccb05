"""What a customer sets up for an Azure integration (`mediaworker policy` and `check`).

Azure has no bucket policy: access is role assignments, Storage Blob Data Reader (read-only) or
Contributor (read-write) on the container, and Storage Blob Delegator on the account when the
worker signs with a user-delegation SAS (no account key). CORS is a property of the account's
blob service, set with `az storage cors add`.
"""

from __future__ import annotations

import os
import shlex

from worker.config import Integration
from worker.policy import PolicyRequest, Setup, cors_methods
from worker.storage.base import Capability

READER = "Storage Blob Data Reader"
CONTRIBUTOR = "Storage Blob Data Contributor"
DELEGATOR = "Storage Blob Delegator"

ROLE_FOR: dict[Capability, str] = {
    "read": READER,
    "list": READER,
    "write": CONTRIBUTOR,
    "delete": CONTRIBUTOR,
    "sign": DELEGATOR,
}
"""The role each of `check`'s capabilities needs."""


def _methods(origin: str, readonly: bool) -> str:
    return " ".join([*cors_methods(origin, readonly), "OPTIONS"])


def _cors_command(account: str, origin: str, methods: str) -> str:
    return (
        f"az storage cors add --services b --account-name {shlex.quote(account)}"
        f" --origins {shlex.quote(origin)} --methods {methods}"
        " --allowed-headers '*' --exposed-headers '*' --max-age 3600"
    )


def azure_setup(request: PolicyRequest) -> Setup:
    integ = request.integration
    account = integ.bucket
    assignee = shlex.quote(request.principal or "<worker-principal-id>")
    account_scope = (
        "/subscriptions/<subscription-id>/resourceGroups/<resource-group>"
        f"/providers/Microsoft.Storage/storageAccounts/{account}"
    )
    container_scope = f"{account_scope}/blobServices/default/containers/{integ.azure_container}"
    role = READER if integ.readonly else CONTRIBUTOR
    methods = _methods(request.origin, integ.readonly)
    setup = Setup(provider="azure")
    setup.commands = [
        f"az role assignment create --assignee {assignee} --role {shlex.quote(role)}"
        f" --scope {shlex.quote(container_scope)}",
        f"az role assignment create --assignee {assignee} --role {shlex.quote(DELEGATOR)}"
        f" --scope {shlex.quote(account_scope)}",
        _cors_command(account, request.origin, methods),
        f"mediaworker check {shlex.quote(integ.name)} --origin {shlex.quote(request.origin)}",
    ]
    setup.cors = {
        "allowed_origins": [request.origin],
        "allowed_methods": methods.split(),
        "allowed_headers": ["*"],
        "exposed_headers": ["*"],
        "max_age_in_seconds": 3600,
    }
    setup.explanations = [
        f"{role} on container {integ.azure_container}: "
        + (
            "read the items and the pre-extracted renditions (read-only integration)."
            if integ.readonly
            else "read the items, write and delete renditions under the prefix."
        ),
        f"{DELEGATOR} on the account: only when the worker signs with a user-delegation"
        " SAS (no account key configured).",
        f"CORS: browsers at {request.origin} may {methods.replace(' ', ', ')} blobs.",
        "Azure role assignments cover whole containers; to limit the worker to folders, give it"
        " its own container or an account-key SAS scoped to them.",
    ]
    if not request.principal:
        setup.explanations.append("Replace <worker-principal-id> with the workers' identity.")
    return setup


def _shared_key() -> bool:
    """Whether the worker signs requests with the account key (the chain's first two)."""
    return bool(
        os.environ.get("AZURE_STORAGE_CONNECTION_STRING") or os.environ.get("AZURE_STORAGE_KEY")
    )


def denied_fix(integ: Integration, capability: Capability, code: str) -> str:
    if code == "AuthenticationFailed" or (_shared_key() and code):
        # With an account key, roles play no part: a refusal means the key is wrong.
        return (
            f"the credentials were rejected ({code}): set AZURE_STORAGE_CONNECTION_STRING or"
            " AZURE_STORAGE_KEY to the account's current key, or sign the worker in"
        )
    role = ROLE_FOR[capability]
    return f"assign the worker the '{role}' role on container {integ.azure_container}"


def cors_fix(integ: Integration, origin: str) -> str:
    return _cors_command(integ.bucket, origin, _methods(origin, integ.readonly))
