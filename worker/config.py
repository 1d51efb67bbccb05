"""Settings and the integrations file (SPEC section 2), validated once at start.

The file is `--config FILE`, else `$MEDIAWORKER_CONFIG`, else `./mediaworker.toml`. Credentials
never live in it: each provider's standard chain supplies them. Environment variables
`MEDIAWORKER_<SECTION>__<FIELD>` (and `MEDIAWORKER_BROKER_URL`) override the file.
"""

from __future__ import annotations

import logging
import os
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from worker.errors import ConfigError
from worker.safety import endpoint_problem
from worker.storage.registry import PROVIDERS, backend_class, unknown_provider

log = logging.getLogger(__name__)

DEFAULT_CONFIG_NAME = "mediaworker.toml"
MAX_SIGNED_URL_SECONDS = 4 * 3600


class Integration(BaseModel):
    """One `[integrations.NAME]` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    provider: str
    """One of `worker.storage.registry.PROVIDERS`."""
    bucket: str = ""
    """S3 and GCS: the bucket. Azure: the storage account name."""
    region: str = ""
    endpoint_url: str | None = None
    """Derived from provider and region when absent (Azure: the account's blob endpoint)."""
    prefix: str = ""
    """Where renditions go. S3 and GCS: default `data`. Azure: `container/folder`, blank is
    `data`."""
    root: Path | None = None
    """Local provider only: the folder that stands for the bucket."""
    readonly: bool = False
    path_style: bool = False
    """Derived: dotted S3 bucket names are addressed path-style."""

    @field_validator("provider", mode="before")
    @classmethod
    def _known_provider(cls, value: Any) -> Any:
        if value not in PROVIDERS:
            raise ValueError(unknown_provider(value))
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _safe_endpoint(cls, value: str | None) -> str | None:
        problem = endpoint_problem(value) if value is not None else None
        if problem:
            raise ValueError(f"field 'endpoint_url': {problem}")
        return value

    @model_validator(mode="after")
    def _check_provider_fields(self) -> Integration:
        """The provider's own rules, from its backend; the fields it derives are set here."""
        for name, value in backend_class(self.provider).configure(self).items():
            object.__setattr__(self, name, value)
        return self

    @property
    def azure_container(self) -> str:
        """Azure: the container, the prefix's first component."""
        return self.prefix.split("/", 1)[0]


Positive = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class Limits(BaseModel):
    """Safe defaults against hostile or accidental inputs (SPEC sections 9 and 11); every limit
    is positive."""

    model_config = ConfigDict(extra="forbid")

    max_image_pixels: Positive = 250_000_000
    """Decompression-bomb guard, decided from the header before decoding."""
    max_source_bytes: Positive = 50 * 1024**3
    max_video_seconds: PositiveFloat = 4 * 3600
    max_video_frames: Positive = 1_000_000
    max_video_width: Positive = 8192
    max_video_height: Positive = 8192
    max_slide_pixels: Positive = 40_000_000_000
    """Whole-slide images: level-0 width x height (200k x 200k); bounds the Deep Zoom tile count."""
    item_timeout_seconds: Positive = 2 * 3600
    """Hard limit per item, in every command and the worker; in the worker the soft limit
    (which fails as `timeout`) is 90% of it."""
    max_item_memory_mb: Positive = 3072
    """Memory one item may claim: decoding whose header claims more (image, tile, associated
    image) fails as `too_large` before it allocates; risky slide decoding runs in a child
    process capped at this much address space."""
    queue_timeout_seconds: dict[str, Positive] = {"images": 600}
    """Hard limit per queue (`images`, `videos`, `slides`), overriding item_timeout_seconds for
    the queues it lists; the soft limit (which fails as `timeout`) is 90% of it."""


class VideoProfileName(StrEnum):
    STANDARD = "standard"
    FAST = "fast"


class VideoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: VideoProfileName = VideoProfileName.STANDARD
    """`standard`: x264 `medium`, CRF 23 / 40, lossless PNG high sections. `fast`: about a
    third of the CPU per minute of video at the same PSNR (within 0.5 dB) for up to 15% more
    bytes, with JPEG high sections (bench/RESULTS-video.md has the figures)."""
    hardware: Literal["auto", "off"] = "off"
    """`auto`: the fast profile encodes HLS on a hardware H.264 encoder when this machine has
    one (NVENC, VAAPI, VideoToolbox), else on x264; untested on real hardware, so off by
    default."""
    sections_high_format: Annotated[str, Field(pattern="^(png|jpg)$")] = "png"
    """Default: `png`, or `jpg` with the fast profile."""
    sections_high_jpeg_quality: Annotated[int, Field(ge=1, le=100)] = 95
    sections_low_jpeg_quality: Annotated[int, Field(ge=1, le=100)] = 50
    x264_preset: str = "medium"
    """The standard profile's x264 preset: x264's default, as SPEC section 10's baseline uses
    (the fast profile has its own tuned settings)."""

    @model_validator(mode="after")
    def _preset_is_for_standard(self) -> VideoSettings:
        if self.profile == VideoProfileName.FAST and "x264_preset" in self.model_fields_set:
            raise ValueError(
                "field 'video.x264_preset' applies to the standard profile; the fast profile"
                " chooses its own x264 settings: remove one of the two"
            )
        return self


def with_video_profile(settings: Settings, profile: str | None) -> Settings:
    """`settings` with `[video] profile` replaced (the command line's `--profile`), checked as
    if it were in the file."""
    if profile is None:
        return settings
    fields = {**settings.video.model_dump(exclude_unset=True), "profile": profile}
    try:
        video = VideoSettings.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError(f"--profile {profile}: {_error_text(exc)}") from None
    return settings.model_copy(update={"video": video})


class WorkerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    work_dir: Path | None = None
    """Scratch space for sources and intermediate files; the system temp folder when unset."""
    write_concurrency: Annotated[int, Field(ge=1, le=64)] = 8
    write_queue_size: Annotated[int, Field(ge=1, le=1024)] = 32
    """Outputs waiting to be written at once: bounds memory whatever the input."""
    download_part_bytes: int = 16 * 1024**2
    download_concurrency: Annotated[int, Field(ge=1, le=32)] = 4
    max_deliveries: Annotated[int, Field(ge=1)] = 3
    """After this many deliveries that killed a worker, the item fails as `poison`."""
    max_retries: Annotated[int, Field(ge=0)] = 5
    """Retries of a task after a transient fault, with exponential backoff and jitter."""
    retry_backoff_seconds: Annotated[float, Field(ge=0)] = 2.0
    """Delay before the first retry; it doubles with each retry, with full jitter."""
    retry_backoff_max_seconds: Annotated[float, Field(ge=0)] = 300.0
    signed_url_min_remaining_seconds: Annotated[int, Field(ge=0)] = 15 * 60
    metrics_port: int | None = None
    images_prefetch: Annotated[int, Field(ge=1, le=64)] = 1
    """Messages a worker that consumes only `images` holds per pool process (see docs/queue.md:
    above one saves a broker round trip per small image, but a dead worker's held items wait for
    the broker to hand them out again)."""
    task_events: bool = False
    """Celery task events (Flower, `celery events`): three more broker messages per item."""


class BrokerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    """Redis or RabbitMQ URL; none means the embedded default (a folder on this machine)."""
    result_backend: str | None = None
    """Where task results go; default: the broker's Redis, `rpc://` for RabbitMQ, a folder in
    state_dir for the embedded broker."""
    state_dir: Path | None = None
    """The embedded broker's messages, results and delivery counts; default
    `$XDG_STATE_HOME/mediaworker`, else `~/.local/state/mediaworker`."""
    queue_prefix: str = ""
    """Prepended to the queue names `images`, `videos`, `slides`, so deployments can share a
    broker."""
    visibility_timeout_seconds: int | None = None
    """Redis: an unacknowledged message returns to its queue after this long; default: the
    longest hard time limit plus 10 minutes, so a running task is never handed out twice."""
    consumer_timeout_seconds: Annotated[int, Field(ge=0)] | None = None
    """RabbitMQ: the broker's `consumer_timeout` as set in rabbitmq.conf (or by a policy on the
    queues), 0 if turned off; default RabbitMQ's 1800. The worker refuses to start on a queue
    whose items it may hold longer (see docs/queue.md)."""
    delivery_store: str | None = None
    """Where deliveries are counted for the `poison` cap: a `redis://` URL or a SQLite file;
    default: the broker's (or result backend's) Redis, else `deliveries.sqlite3` in state_dir."""


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Path | None = None
    broker: BrokerSettings = BrokerSettings()
    limits: Limits = Limits()
    video: VideoSettings = VideoSettings()
    worker: WorkerSettings = WorkerSettings()
    integrations: dict[str, Integration] = {}

    def integration(self, name: str) -> Integration:
        try:
            return self.integrations[name]
        except KeyError:
            where = self.source or "no config file"
            known = ", ".join(sorted(self.integrations)) or "none"
            raise ConfigError(
                f"integration {name!r} is not defined in {where} (defined: {known})"
            ) from None


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    env = os.environ.get("MEDIAWORKER_CONFIG")
    if env:
        if not Path(env).is_file():
            raise ConfigError(f"$MEDIAWORKER_CONFIG names {env}, which does not exist")
        return Path(env)
    default = Path(DEFAULT_CONFIG_NAME)
    return default if default.is_file() else None


def load_settings(explicit: str | os.PathLike[str] | None = None) -> Settings:
    path = config_path(explicit)
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return settings_from_dict(data, path)


def settings_from_dict(data: dict[str, Any], source: Path | None = None) -> Settings:
    data = _apply_env(dict(data))
    base = source.parent if source else Path.cwd()
    raw_integrations = data.pop("integrations", {}) or {}
    integrations = {
        name: _integration(name, dict(table), base) for name, table in raw_integrations.items()
    }
    try:
        settings = Settings(source=source, integrations=integrations, **data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, source)) from None
    for integ in integrations.values():
        if integ.path_style:
            log.info(
                "integration %r: bucket %r has dots, so it is addressed path-style"
                " (virtual-host HTTPS does not cover dotted names)",
                integ.name,
                integ.bucket,
            )
    return settings


def _integration(name: str, table: dict[str, Any], base: Path) -> Integration:
    if table.get("root") is not None:
        root = Path(str(table["root"])).expanduser()
        table["root"] = root if root.is_absolute() else (base / root)
    try:
        return Integration(name=name, **table)
    except ValidationError as exc:
        raise ConfigError(f"integration {name!r}: {_error_text(exc)}") from None


def _error_text(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "missing":
        return f"field {field!r} is required"
    if first["type"] == "extra_forbidden":
        return f"field {field!r} is not a known setting"
    if message.startswith("field "):
        return message
    return f"field {field!r}: {message}" if field else message


def _one_line(exc: ValidationError, source: Path | None) -> str:
    return f"{source or 'settings'}: {_error_text(exc)}"


def _apply_env(data: dict[str, Any]) -> dict[str, Any]:
    """`MEDIAWORKER_BROKER_URL` and `MEDIAWORKER_<SECTION>__<FIELD>` override the file."""
    for name, value in os.environ.items():
        if not name.startswith("MEDIAWORKER_") or name == "MEDIAWORKER_CONFIG":
            continue
        rest = name.removeprefix("MEDIAWORKER_").lower()
        section, _, field = rest.partition("__") if "__" in rest else rest.partition("_")
        if section in ("broker", "limits", "video", "worker") and field:
            data.setdefault(section, {})
            data[section] = {**data[section], field: value}
    return data
