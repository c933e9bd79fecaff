"""The YAML inventory: its models, loading with line numbers, and layered settings.

A file is parsed into YAML nodes (which keep line and column), turned into plain data, and
validated by pydantic models that forbid unknown keys. Every problem becomes a
:class:`rotd.errors.ConfigError` located at ``FILE:LINE:COL``; all of them are reported at once.
Settings are layered: ``defaults`` < database < secret, the most specific wins (``password``
and ``derived_keys`` merge key by key). The result, :class:`Inventory`, is immutable: a reload
builds a new one. Loading is offline: it calls no AWS and no database; derived keys' templates
are compiled, never rendered.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import re
from collections.abc import Iterator, Mapping, Set
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rotd.engines import SECRET_KEYS, Settings, Tls, TlsMode
from rotd.engines import capabilities as engine_capabilities
from rotd.engines.registry import installed
from rotd.errors import ConfigError, ConfigErrors, EngineError
from rotd.passwords import PasswordPolicy
from rotd.schedule import Schedule, parse_duration, parse_schedule

if TYPE_CHECKING:
    from rotd.templates import TemplateProblem

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

DEFAULT_SCHEDULE = "rate(30 days)"
DEFAULT_WINDOW = "1h"
SHORT_SCHEDULE = timedelta(minutes=10)


class Rotation(StrEnum):
    """Who starts a secret's rotations: rotd's own schedule (``daemon``), or Secrets Manager's
    rotation rules through the bridge function (``bridge``, docs/bridge.md)."""

    DAEMON = "daemon"
    BRIDGE = "bridge"


class Strategy(StrEnum):
    SINGLE_USER = "single_user"
    ALTERNATING_USERS = "alternating_users"


# --- the file's models --------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


def _check_schedule(value: Any) -> Any:
    if isinstance(value, str):
        parse_schedule(value)
    return value


def _check_duration(value: Any) -> Any:
    if isinstance(value, str | int) and not isinstance(value, bool):
        parse_duration(value)
    return value


def _check_timezone(value: Any) -> Any:
    if isinstance(value, str):
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as UTC or Europe/Berlin"
            ) from None
    return value


ScheduleText = Annotated[str, BeforeValidator(_check_schedule)]
DurationText = Annotated[str | int, BeforeValidator(_check_duration)]
TimezoneText = Annotated[str, BeforeValidator(_check_timezone)]


def _check_region(value: Any) -> Any:
    if isinstance(value, str) and not _REGION.match(value):
        raise ValueError(
            f"{value!r} is not an AWS region name; regions look like eu-west-1 or us-east-2"
        )
    return value


def _check_role_arn(value: Any) -> Any:
    if isinstance(value, str) and not _ROLE_ARN.match(value):
        raise ValueError(
            f"{value!r} is not an IAM role ARN; it looks like "
            "arn:aws:iam::123456789012:role/rotd-rotator"
        )
    return value


def _check_endpoint_url(value: Any) -> Any:
    if isinstance(value, str) and not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("endpoint_url must be an http:// or https:// URL")
    return value


def _check_queue_url(value: Any) -> Any:
    if isinstance(value, str) and not re.match(r"^https?://[^/\s]+/\d{12}/[\w-]{1,80}$", value):
        raise ValueError(
            f"{value!r} is not an SQS queue URL; it looks like "
            "https://sqs.eu-west-1.amazonaws.com/123456789012/rotd-bridge"
        )
    return value


def _check_function_arn(value: Any) -> Any:
    if isinstance(value, str) and not _FUNCTION_ARN.match(value):
        raise ValueError(
            f"{value!r} is not a Lambda function ARN; it looks like "
            "arn:aws:lambda:eu-west-1:123456789012:function:rotd-bridge"
        )
    return value


RegionText = Annotated[str, BeforeValidator(_check_region)]
RoleArnText = Annotated[str, BeforeValidator(_check_role_arn)]
EndpointUrlText = Annotated[str, BeforeValidator(_check_endpoint_url)]


class PasswordModel(_Model):
    length: int | None = Field(default=None, ge=8, le=4096)
    exclude_characters: str | None = None
    exclude_punctuation: bool | None = None
    exclude_numbers: bool | None = None
    exclude_uppercase: bool | None = None
    exclude_lowercase: bool | None = None
    require_each_included_type: bool | None = None


class HookModel(_Model):
    """One action after a successful rotation: a command (exec) or an HTTP POST (webhook).

    Everything that can be known offline about whether a hook can run is checked here, so that
    a hook that could never be called is a configuration error, not a failure after a rotation.
    """

    exec: list[str] | None = Field(default=None, min_length=1)
    webhook: str | None = None
    timeout: DurationText = "30s"
    retries: int = Field(default=3, ge=0, le=10)
    include_secret: bool = False
    hmac_key_file: str | None = Field(default=None, min_length=1)

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: str | int) -> str | int:
        if parse_duration(value) <= timedelta(0):
            raise ValueError("a hook's timeout must be at least 1s")
        return value

    @field_validator("exec")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        return _check_argv(value)

    @field_validator("webhook")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            check_webhook(value)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> HookModel:
        if (self.exec is None) == (self.webhook is None):
            raise ValueError("a hook has exactly one of exec: [argv...] or webhook: URL")
        if self.exec is not None and self.hmac_key_file is not None:
            raise ValueError("hmac_key_file applies to webhook hooks only")
        if self.webhook is not None and self.include_secret:
            raise ValueError(
                "include_secret applies to exec hooks only (the secret goes to standard input)"
            )
        return self


def _check_argv(value: list[str] | None) -> list[str] | None:
    if value is None:
        return value
    if not value[0].strip():
        raise ValueError("the program, the first item, is empty")
    if any("\0" in arg for arg in value):
        raise ValueError("an argument holds a NUL character, which no command can receive")
    return value


Argv = Annotated[list[str], Field(min_length=1)]

EXEC_ENGINE = "exec"


class ExecModel(_Model):
    """The commands of an ``engine: exec`` database (README: The exec engine)."""

    set_password: Argv
    test_login: Argv
    mirror_user: Argv | None = None
    timeout: DurationText = "30s"

    @field_validator("set_password", "test_login", "mirror_user")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        return _check_argv(value)

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: str | int) -> str | int:
        if parse_duration(value) <= timedelta(0):
            raise ValueError("the commands' timeout must be at least 1s")
        return value


class BridgeModel(_Model):
    """Where the bridge function's messages arrive, and which function it is (docs/bridge.md)."""

    queue_url: Annotated[str, BeforeValidator(_check_queue_url)]
    function_arn: Annotated[str, BeforeValidator(_check_function_arn)]
    # How often the daemon looks for bridged rotations whose messages were lost.
    scan_every: DurationText = "5m"


class SettingsModel(_Model):
    """The settings that may stand in ``defaults``, on a database or on a secret."""

    strategy: Strategy | None = None
    schedule: ScheduleText | None = None
    window: DurationText | None = None
    timezone: TimezoneText | None = None
    password: PasswordModel | None = None
    tls: TlsMode | None = None
    ca_file: str | None = None
    master_secret: str | None = Field(default=None, min_length=1)
    test_query: str | None = Field(default=None, min_length=1)
    on_rotated: list[HookModel] | None = None
    # Keys rendered from each new version's own keys (docs/inventory.md: Derived keys); merged
    # key by key, and a key set to null removes the one a broader level set.
    derived_keys: dict[str, str | None] | None = None
    rotation: Rotation | None = None

    @field_validator("derived_keys")
    @classmethod
    def _derived_names(cls, value: dict[str, str | None] | None) -> dict[str, str | None] | None:
        for key in value or {}:
            if not key.strip():
                raise ValueError("a derived key's name must not be empty")
            if key in SECRET_KEYS:
                raise ValueError(
                    f"{key!r} is a key rotd reads from the secret itself; a derived key may "
                    "not replace it: choose another name (url, DATABASE_URL, dsn)"
                )
        return value


class SecretModel(SettingsModel):
    id: str = Field(min_length=1)


class AccessModel(_Model):
    """Where and as whom one database's secrets live: the ``aws:`` block of ``defaults`` and of
    a database (the top-level ``aws:`` holds the same keys and the process-wide limits)."""

    region: RegionText | None = None
    endpoint_url: EndpointUrlText | None = None
    profile: str | None = None
    role_arn: RoleArnText | None = None
    external_id: str | None = Field(default=None, pattern=r"^[\w+=,.@:/-]{2,}$", max_length=1224)
    session_name: str | None = Field(default=None, pattern=r"^[\w+=,.@-]{2,}$", max_length=64)

    @model_validator(mode="after")
    def _role_options(self) -> AccessModel:
        for key in ("external_id", "session_name"):
            if getattr(self, key) is not None and self.role_arn is None:
                raise ValueError(f"{key} applies only with role_arn (the role rotd assumes)")
        return self


class DefaultsModel(SettingsModel):
    aws: AccessModel | None = None
    bridge: BridgeModel | None = None


class DatabaseModel(SettingsModel):
    name: str = Field(min_length=1)
    aws: AccessModel | None = None
    bridge: BridgeModel | None = None
    host: str | None = Field(default=None, min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    dbname: str | None = None
    engine: str | None = None
    verify_endpoints: list[str] = Field(default_factory=list)
    exec: ExecModel | None = None
    # Every node told each ACL change, for engines that do not replicate users (Redis).
    nodes: list[str] = Field(default_factory=list)
    secrets: list[SecretModel] = Field(min_length=1)

    @field_validator("exec")
    @classmethod
    def _exec_only(cls, value: ExecModel | None, info: ValidationInfo) -> ExecModel | None:
        if value is not None and info.data.get("engine") != EXEC_ENGINE:
            raise ValueError("exec: applies only to a database with engine: exec")
        return value

    @model_validator(mode="after")
    def _exec_block(self) -> DatabaseModel:
        if self.engine == EXEC_ENGINE and self.verify_endpoints:
            raise ValueError(
                "verify_endpoints does not apply to engine exec: its test_login command "
                "receives the secret's JSON, not an address to log in through"
            )
        if self.engine == EXEC_ENGINE and self.exec is None:
            raise ValueError(
                "engine: exec needs an exec: block with set_password: [argv...] and "
                "test_login: [argv...]"
            )
        return self

    @field_validator("verify_endpoints")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        for item in value:
            _split_host_port(item, "a verify endpoint", "10.1.2.4:5432")
        return value

    @field_validator("nodes")
    @classmethod
    def _nodes(cls, value: list[str]) -> list[str]:
        for item in value:
            _split_host_port(item, "a node", "10.1.2.4:6379")
        return value

    @field_validator("engine")
    @classmethod
    def _engine(cls, value: str | None) -> str | None:
        if value is not None and value not in installed():
            allowed = ", ".join(installed().names())
            raise ValueError(f"unknown engine {value!r}; installed: {allowed}")
        return value


class AwsModel(AccessModel):
    # Per account and region: Secrets Manager's write quota is counted per pair.
    max_write_tps: float = Field(default=40.0, gt=0, le=50)


class LimitsModel(_Model):
    max_concurrent: int = Field(default=16, ge=1, le=1024)
    max_concurrent_per_host: int = Field(default=4, ge=1, le=1024)


class DaemonModel(_Model):
    shutdown_grace: DurationText = "30s"
    listen: str | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            _split_listen(value)
        return value


class RenderModel(_Model):
    """One file kept current with a secret's AWSCURRENT value (docs/render.md)."""

    secret: str = Field(min_length=1)
    path: str = Field(min_length=1)
    template: str | None = None
    mode: str = "0600"
    owner: str | int | None = None
    group: str | int | None = None
    on_change: list[str] | None = Field(default=None, min_length=1)
    on_change_timeout: DurationText = "30s"
    refresh: DurationText = "5m"

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        if not (_ARN.match(value) or _SECRET_NAME.fullmatch(value)):
            raise ValueError(
                f"{value!r} is neither a secret name (letters, digits and /_+=.@-, at most "
                "512) nor a Secrets Manager ARN"
            )
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not os.path.isabs(value) or value.endswith("/") or "\0" in value:
            raise ValueError("path must be an absolute file path such as /run/rotd/app.env")
        return value

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            from rotd.render import check_template  # only inventories that render pay for it

            check_template(value)
        return value

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        if not isinstance(value, str) or not re.fullmatch(r"[0-7]{3,4}", value):
            raise ValueError(
                'mode must be a quoted octal string such as "0600" (unquoted, YAML reads '
                "0600 as a number)"
            )
        if int(value, 8) & 0o7000:
            raise ValueError("mode may not set setuid, setgid or sticky bits")
        return value

    @field_validator("on_change")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        return _check_argv(value)

    @field_validator("on_change_timeout", "refresh")
    @classmethod
    def _positive(cls, value: str | int) -> str | int:
        if parse_duration(value) <= timedelta(0):
            raise ValueError("must be at least 1s")
        return value


_EVENT_BUS_ARN = re.compile(r"^arn:aws[\w-]*:events:(?P<region>[\w-]+):\d{12}:event-bus/[\w./-]+$")
_EVENT_BUS_NAME = re.compile(r"^[\w./-]{1,256}$")


class EventBridgeModel(_Model):
    bus: str
    region: RegionText | None = None
    role_arn: RoleArnText | None = None
    endpoint_url: EndpointUrlText | None = None
    source: str = Field(default="rotd", min_length=1, max_length=256)

    @field_validator("bus")
    @classmethod
    def _bus(cls, value: str) -> str:
        if value.startswith("arn:"):
            if not _EVENT_BUS_ARN.match(value):
                raise ValueError(
                    "bus must be an event bus name or its ARN, "
                    "e.g. arn:aws:events:us-east-1:123456789012:event-bus/rotations"
                )
        elif not _EVENT_BUS_NAME.match(value):
            raise ValueError("bus must be an event bus name (letters, digits, . _ / -) or its ARN")
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if value.startswith("aws."):
            raise ValueError("source may not start with 'aws.': EventBridge reserves it for AWS")
        return value


class EventsModel(_Model):
    eventbridge: EventBridgeModel | None = None


class InventoryModel(_Model):
    aws: AwsModel = AwsModel()
    defaults: DefaultsModel = DefaultsModel()
    limits: LimitsModel = LimitsModel()
    daemon: DaemonModel = DaemonModel()
    events: EventsModel = EventsModel()
    bridge: BridgeModel | None = None
    databases: list[DatabaseModel] = Field(default_factory=list)
    render: list[RenderModel] = Field(default_factory=list)


# --- the resolved inventory ---------------------------------------------------------------------


@dataclass(frozen=True)
class Hook:
    """A resolved ``on_rotated`` hook: ``argv`` for exec hooks, ``url`` for webhooks."""

    argv: tuple[str, ...] | None
    url: str | None
    timeout: timedelta
    retries: int
    include_secret: bool
    hmac_key_file: str | None

    @property
    def label(self) -> str:
        return self.url if self.url is not None else " ".join(self.argv or ())


@dataclass(frozen=True)
class EventBridge:
    """Where rotd puts its rotation events: the ``events.eventbridge`` section, resolved.

    ``region`` is the bus's (from its ARN, the section, or the inventory's); ``endpoint_url``
    None means AWS's own endpoint for the region.
    """

    bus: str
    region: str | None
    role_arn: str | None
    endpoint_url: str | None
    source: str


@dataclass(frozen=True)
class Bridge:
    """A resolved ``bridge`` block: the queue the function sends each step to, the function
    Secrets Manager must invoke for the bridged secrets, and how often lost steps are sought."""

    queue_url: str
    function_arn: str
    scan_every: timedelta

    @property
    def region(self) -> str | None:
        """The function's region: Secrets Manager invokes a function of its own region only."""
        match = _FUNCTION_ARN.match(self.function_arn)
        return match.group("region") if match else None

    @property
    def queue_region(self) -> str | None:
        """The queue's region, from an AWS queue URL (None for an emulator's)."""
        match = re.match(r"^https://sqs\.([a-z0-9-]+)\.amazonaws\.com", self.queue_url)
        return match.group(1) if match else None


@dataclass(frozen=True)
class AwsAccess:
    """Where one secret lives and as whom rotd reaches it: a region, and either the process's
    own credentials (its environment or ``profile``) or a role assumed from them."""

    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    role_arn: str | None = None
    external_id: str | None = field(default=None, repr=False)
    session_name: str | None = None

    @property
    def account(self) -> str | None:
        """The role's account; None for the process's own identity (unknown offline)."""
        match = _ROLE_ARN.match(self.role_arn or "")
        return match.group("account") if match else None

    @property
    def label(self) -> str:
        """``account/region`` for logs, status and metrics; ``base`` for the own identity."""
        return f"{self.account or 'base'}/{self.region or '-'}"

    def in_region(self, region: str) -> AwsAccess:
        return replace(self, region=region)

    def fields(self) -> dict[str, Any]:
        """These settings by name, to set on a connection or an inventory with ``replace``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class SecretSpec:
    """Everything known about one secret before AWS is asked: its settings, fully layered."""

    id: str
    database: str
    strategy: Strategy
    schedule: Schedule
    window: timedelta
    timezone: ZoneInfo
    password: PasswordPolicy
    tls: Tls
    tls_set: bool  # whether the inventory chose ``tls`` (else the secret's ``ssl`` may decide)
    master_secret: str | None
    test_query: str | None
    host: str | None
    port: int | None
    dbname: str | None
    engine: str | None
    hooks: tuple[Hook, ...] = ()
    engine_settings: Settings = field(
        default_factory=Settings
    )  # the database's block for its engine (exec:)
    verify_endpoints: tuple[tuple[str, int], ...] = ()
    nodes: tuple[tuple[str, int], ...] = ()
    # (key, template) pairs rendered into each new version before it is written.
    derived_keys: tuple[tuple[str, str], ...] = ()
    aws: AwsAccess = field(default_factory=AwsAccess)
    rotation: Rotation = Rotation.DAEMON
    bridge: Bridge | None = None  # set for ``rotation: bridge`` only
    line: int = field(default=0, compare=False)

    @property
    def bridged(self) -> bool:
        return self.rotation is Rotation.BRIDGE

    @property
    def name(self) -> str:
        """The secret's name: the id, or the name part of an ARN."""
        return secret_name(self.id)


@dataclass(frozen=True)
class RenderSpec:
    """A resolved ``render`` entry: the file ``path`` holds ``secret``'s AWSCURRENT value,
    through ``template`` when set; ``mode`` is the file's permission bits."""

    secret: str
    path: str
    template: str | None
    mode: int
    owner: str | int | None
    group: str | int | None
    on_change: tuple[str, ...] | None
    on_change_timeout: timedelta
    refresh: timedelta
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Inventory:
    path: str
    region: str | None
    endpoint_url: str | None
    profile: str | None
    max_write_tps: float
    max_concurrent: int
    max_concurrent_per_host: int
    shutdown_grace: timedelta
    listen: tuple[str, int] | None
    databases: tuple[str, ...]
    secrets: tuple[SecretSpec, ...]
    warnings: tuple[str, ...] = ()
    renders: tuple[RenderSpec, ...] = ()
    eventbridge: EventBridge | None = None
    derived_keys: tuple[tuple[str, str], ...] = ()  # the defaults', for `rotd secret create`
    role_arn: str | None = None
    external_id: str | None = field(default=None, repr=False)
    session_name: str | None = None

    def find(self, key: str) -> SecretSpec | None:
        """The secret named ``key`` as written in the inventory, by its ARN, or by its name."""
        for spec in self.secrets:
            if key in (spec.id, spec.name) or secret_name(key) == spec.name:
                return spec
        return None

    @property
    def accesses(self) -> tuple[AwsAccess, ...]:
        """Each distinct account, region and identity the inventory's secrets live in."""
        return tuple(dict.fromkeys(spec.aws for spec in self.secrets))

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for spec in self.secrets:
            counts[spec.strategy] = counts.get(spec.strategy, 0) + 1
        detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        rendered = f", {len(self.renders)} rendered file(s)" if self.renders else ""
        return (
            f"{self.path}: valid: {len(self.databases)} database(s), "
            f"{len(self.secrets)} secret(s)" + (f" ({detail})" if detail else "") + rendered
        )


_ARN = re.compile(
    r"^arn:aws[\w-]*:secretsmanager:(?P<region>[\w-]+):(?P<account>\d{12}):secret:(?P<name>.+)$"
)
_ROLE_ARN = re.compile(r"^arn:aws[\w-]*:iam::(?P<account>\d{12}):role/[\w+=,.@/-]{1,512}$")
_FUNCTION_ARN = re.compile(
    r"^arn:aws[\w-]*:lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):function:"
    r"(?P<name>[\w-]{1,64})(:(?P<qualifier>[\w$-]{1,128}))?$"
)
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")


def secret_location(secret_id: str) -> tuple[str, str] | None:
    """(account, region) named by a secret ARN; None for a name."""
    match = _ARN.match(secret_id)
    return (match.group("account"), match.group("region")) if match else None


_SECRET_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")


def aws_region(chosen: str | None = None) -> str | None:
    """The AWS region: ``chosen`` (the inventory's or the command line's), else
    ``AWS_REGION``, else ``AWS_DEFAULT_REGION``, as the AWS CLI reads them (botocore alone
    reads only the latter); None when none is set."""
    return chosen or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def secret_name(secret_id: str) -> str:
    """The name inside a secret ARN (without AWS's random 6-character suffix), else the id."""
    match = _ARN.match(secret_id)
    if not match:
        return secret_id
    name = match.group("name")
    # AWS appends "-" and six random characters to the name in a full ARN.
    return re.sub(r"-[A-Za-z0-9]{6}$", "", name)


def check_webhook(url: str) -> None:
    """Raise ValueError unless ``url`` is an http(s) URL that can be requested: a host, a port
    from 1 to 65535, nothing the HTTP client cannot parse. Messages never quote the URL, whose
    path may hold a token."""
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError("the URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {_url_problem(exc)}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("webhook must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("the URL names no host; write e.g. https://deploy.example.com/hook")
    if port == 0:
        raise ValueError("not a valid URL: the port must be 1 to 65535, not 0")
    # The HTTP client parses the URL again, by rules of its own (hosts are IDNA-encoded).
    import yarl  # only inventories with webhooks pay for the import

    try:
        parsed = yarl.URL(url)
        parsed.host, parsed.port  # noqa: B018 - parsed lazily; asking is the check
    except (ValueError, UnicodeError) as exc:
        raise ValueError(f"not a valid URL: {_url_problem(exc)}") from None


def _url_problem(exc: Exception) -> str:
    text = str(exc)
    if text.startswith("Port out of range"):
        return "the port must be 1 to 65535"
    if "port" in text.lower():
        return "the port is not a number"
    if "IPv6" in text:
        return "an IPv6 host in [brackets] is not closed, or not an IPv6 address"
    return "the host cannot be parsed"


def _split_listen(value: str) -> tuple[str, int]:
    return _split_host_port(value, "listen", "127.0.0.1:9464")


def _split_host_port(value: str, what: str, example: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what} must be HOST:PORT, e.g. {example}, not {value!r}")
    return host.strip("[]"), int(port)


# --- loading ------------------------------------------------------------------------------------

Path_ = tuple[str | int, ...]
_YAML_TAG = "tag:yaml.org,2002:"
_STR_TAG = _YAML_TAG + "str"
_MAP_TAG = _YAML_TAG + "map"
_SEQ_TAG = _YAML_TAG + "seq"
_MERGE_TAG = _YAML_TAG + "merge"
_VALUE_TAG = _YAML_TAG + "value"  # YAML 1.1 resolves a plain "=" to it; nothing constructs it
# What plain scalars resolve to; SafeConstructor builds these without running any code.
_SCALAR_TAGS = frozenset(_YAML_TAG + t for t in ("null", "bool", "int", "float", "timestamp"))
# An inventory nests 9 levels deep; a file nested far deeper is broken or hostile.
MAX_DEPTH = 64
# Aliases repeat values (a shared password policy, hooks); they may not multiply a small file
# into millions of values ("billion laughs"). They may add this many values, or this many for
# each value the file writes out, whichever is more.
ALIAS_VALUES = 100_000
ALIAS_RATIO = 4


class _TooManyAliasedValues(Exception):
    """Building stops: the error is recorded, and going on would only use more memory."""


class _Located:
    """Plain data built from YAML nodes, and the position of any key or value, on demand.

    libyaml's nodes already carry their marks, so positions cost nothing until asked for: only
    errors, warnings and each secret's line ask, and a lookup walks the nodes along its path.
    """

    def __init__(self, path: str, root: yaml.Node, text: str) -> None:
        self.path = path
        self.root = root
        self.text = text
        self.errors: list[ConfigError] = []
        self.unbuilt: set[int] = set()  # the nodes reported while building, so built as None
        self._constructor = yaml.constructor.SafeConstructor()
        self._nodes: dict[Path_, yaml.Node | None] = {(): root}
        # While building: the collections being built, innermost last, and all those built so
        # far (an alias makes the composer hand out the same node again).
        self._open: dict[int, yaml.Node] = {}
        self._built: set[int] = set()
        self._expanding = 0  # how many aliases are being expanded, one inside the other
        self._written = 0  # values built from the file's own text
        self._aliased = 0  # values built again because an alias repeats them
        self._site = root  # where the alias being expanded stands
        self._recursion_reported = False

    def error_at(self, mark: Any, reason: str) -> None:
        self.errors.append(ConfigError(self.path, mark.line + 1, mark.column + 1, reason))

    def build(self, node: yaml.Node) -> Any:
        """Plain data for ``node``; what cannot be built is reported and becomes None.

        Raises _TooManyAliasedValues when aliases would expand the file without bound.
        """
        if self._expanding:
            self._count_aliased()
        else:
            self._written += 1
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        if node.tag != (_MAP_TAG if isinstance(node, yaml.MappingNode) else _SEQ_TAG):
            return self._unbuilt(node, f"YAML tags ({_short_tag(node.tag)}) are not supported")
        key = id(node)
        if key in self._open:
            self._report_recursion(node)
            self.unbuilt.add(key)
            return None
        if len(self._open) >= MAX_DEPTH:
            # Within an alias, what nests too deep is the alias, not the value it refers to.
            site = self._site if self._expanding else node
            self.error_at(site.start_mark, f"values may be nested at most {MAX_DEPTH} levels deep")
            self.unbuilt.add(key)
            return None
        again = key in self._built
        if again and not self._expanding:
            # The collection the outermost alias stands in: the last one written out.
            self._site = next(reversed(self._open.values()))
        self._built.add(key)
        self._open[key] = node
        self._expanding += again
        try:
            return self._collection(node)
        finally:
            self._expanding -= again
            del self._open[key]

    def _unbuilt(self, node: yaml.Node, reason: str) -> None:
        self.error_at(node.start_mark, reason)
        self.unbuilt.add(id(node))

    def _count_aliased(self) -> None:
        self._aliased += 1
        if self._aliased > max(ALIAS_VALUES, ALIAS_RATIO * self._written):
            self.error_at(
                self._site.start_mark,
                f"YAML aliases expand to too many values: at most {ALIAS_VALUES:,}, or "
                f"{ALIAS_RATIO} for each value written out",
            )
            raise _TooManyAliasedValues

    def _report_recursion(self, node: yaml.Node) -> None:
        if self._recursion_reported:  # all of them were reported the first time
            return
        self._recursion_reported = True
        found = _recursive_aliases(self.text) or [("", node.start_mark)]
        for anchor, mark in found:
            self.error_at(
                mark,
                f"the YAML alias *{anchor} is inside the value it refers to; "
                "recursive aliases are not supported",
            )

    def _collection(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    self.error_at(key_node.start_mark, "YAML merge keys (<<) are not supported")
                    continue
                reported = len(self.errors)
                key = self.build(key_node)
                if len(self.errors) > reported or id(key_node) in self.unbuilt:
                    continue
                if not isinstance(key, str):
                    self.error_at(key_node.start_mark, f"keys must be strings, not {key!r}")
                    continue
                if key in result:
                    self.error_at(key_node.start_mark, f"duplicate key {key!r}")
                    continue
                result[key] = self.build(value_node)
            return result
        return [self.build(item) for item in node.value]

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        if node.tag in (_STR_TAG, _VALUE_TAG):
            return node.value  # what SafeConstructor makes of a str, without its bookkeeping
        if node.tag not in _SCALAR_TAGS:
            return self._unbuilt(node, f"YAML tags ({_short_tag(node.tag)}) are not supported")
        try:
            return self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, KeyError, AttributeError, OverflowError):
            # An explicit tag the text does not fit (!!int soon), or a date that does not exist.
            return self._unbuilt(node, f"{node.value!r} is not a valid {_short_tag(node.tag)}")

    def _entry(self, mapping: yaml.MappingNode, key: str) -> tuple[yaml.Node, yaml.Node] | None:
        """The key and value nodes that :meth:`build` kept for ``key``: the first, if any."""
        for key_node, value_node in mapping.value:
            # Only plain string scalars build to a str key, so only they can match.
            if (
                isinstance(key_node, yaml.ScalarNode)
                and key_node.tag == _STR_TAG
                and key_node.value == key
            ):
                return key_node, value_node
        return None

    def _node(self, where: Path_) -> yaml.Node | None:
        """The node at ``where``, or None when the data has nothing there."""
        if where in self._nodes:
            return self._nodes[where]
        parent = self._node(where[:-1])
        part = where[-1]
        node: yaml.Node | None = None
        if isinstance(parent, yaml.MappingNode) and isinstance(part, str):
            entry = self._entry(parent, part)
            node = entry[1] if entry is not None else None
        elif isinstance(parent, yaml.SequenceNode) and isinstance(part, int):
            node = parent.value[part] if 0 <= part < len(parent.value) else None
        self._nodes[where] = node
        return node

    def locate(self, where: Path_, *, key: bool = False) -> tuple[int, int]:
        """The position of ``where`` (of its key, with ``key``), or of its nearest ancestor."""
        if key and where:
            parent = self._node(where[:-1])
            if isinstance(parent, yaml.MappingNode) and isinstance(where[-1], str):
                entry = self._entry(parent, where[-1])
                if entry is not None:
                    return _position(entry[0])
        probe = where
        while probe:
            node = self._node(probe)
            if node is not None:
                return _position(node)
            probe = probe[:-1]
        return _position(self.root)

    def unbuilt_at(self, where: Path_) -> bool:
        """Whether the value at ``where`` was reported while building, and so is None."""
        return id(self._node(where)) in self.unbuilt

    def unbuilt_within(self, where: Path_) -> bool:
        """Whether anything at or under ``where`` was reported while building."""
        if not self.unbuilt:
            return False
        todo, seen = [self._node(where)], set()
        while todo:
            node = todo.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if id(node) in self.unbuilt:
                return True
            if isinstance(node, yaml.MappingNode):
                todo.extend(part for pair in node.value for part in pair)
            elif isinstance(node, yaml.SequenceNode):
                todo.extend(node.value)
        return False

    def template_position(self, where: Path_, problem: TemplateProblem) -> tuple[int, int]:
        """Where in the file a problem at a line and column of the template at ``where`` is.

        A literal block (``|``) keeps the template's lines; any other scalar is one line,
        shifted by its opening quote. Escapes in a double-quoted scalar are not counted.
        """
        node = self._node(where)
        if not isinstance(node, yaml.ScalarNode):
            return self.locate(where)
        start = node.start_mark
        if node.style in ("|", ">"):
            line = start.line + 1 + problem.line
            lines = self.text.splitlines()
            text = lines[line - 1] if line <= len(lines) else ""
            return line, len(text) - len(text.lstrip(" ")) + problem.column
        quote = 1 if node.style in ("'", '"') else 0
        if problem.line == 1:
            return start.line + 1, start.column + quote + problem.column
        return start.line + 1, start.column + 1

    def add(self, where: Path_, reason: str, *, key: bool = False) -> None:
        line, column = self.locate(where, key=key)
        self.errors.append(ConfigError(self.path, line, column, reason))


def _recursive_aliases(text: str) -> list[tuple[str, Any]]:
    """Each alias that stands inside the collection its anchor names, with its mark.

    Composed nodes keep no trace of aliases, so this reads the file's events again; it runs only
    when building has found such an alias.
    """
    found: list[tuple[str, Any]] = []
    open_anchors: list[str | None] = []
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            open_anchors.append(event.anchor)
        elif isinstance(event, yaml.CollectionEndEvent):
            open_anchors.pop()
        elif isinstance(event, yaml.AliasEvent) and event.anchor in open_anchors:
            found.append((str(event.anchor), event.start_mark))
    return found


def _short_tag(tag: str) -> str:
    """A tag as it is written in YAML: ``!!int`` for YAML's own, ``!foo`` for local ones."""
    return "!!" + tag.removeprefix(_YAML_TAG) if tag.startswith(_YAML_TAG) else tag


def _position(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def load(path: str | os.PathLike[str]) -> Inventory:
    """Read, validate and resolve an inventory file; raise ConfigErrors listing every problem."""
    text_path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigErrors(
            [ConfigError(text_path, 1, 1, f"cannot read the file: {exc.strerror}")]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigErrors(
            [ConfigError(text_path, 1, 1, f"the file is not UTF-8: {exc.reason}")]
        ) from None
    return loads(text, text_path)


def loads(text: str, path: str = "<inventory>") -> Inventory:
    """Validate and resolve an inventory's text; ``path`` names it in errors and warnings."""
    with _collector_paused():
        return _loads(text, path)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while loading.

    A large inventory makes hundreds of thousands of short-lived objects (nodes, marks, models)
    and next to no cycles. Each counts towards the collector's thresholds, and the full
    collections they trigger walk every object the process holds: in a daemon tracking 10,000
    secrets they made a reload take 2.5 times as long. Reference counting frees the objects
    anyway. The pause is process-wide, so it also covers the daemon's event loop while a reload
    loads in a worker thread, for the fraction of a second that takes.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _loads(text: str, path: str) -> Inventory:
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = f"not valid YAML: {exc.problem or exc.context}"
        raise ConfigErrors([ConfigError(path, line, column, reason)]) from None
    except yaml.YAMLError as exc:
        raise ConfigErrors([ConfigError(path, 1, 1, f"not valid YAML: {exc}")]) from None
    except RecursionError:  # PyYAML's own parser, without libyaml's limit on nesting
        raise ConfigErrors([ConfigError(path, 1, 1, "not valid YAML: nested too deeply")]) from None
    if node is None:
        raise ConfigErrors([ConfigError(path, 1, 1, "the file is empty; see config/example.yaml")])
    located = _Located(path, node, text)
    try:
        data = located.build(node)
    except _TooManyAliasedValues:
        raise ConfigErrors(sorted(located.errors, key=lambda e: (e.line, e.column))) from None
    if not isinstance(data, dict):
        if not located.unbuilt_at(()):
            located.add((), "the inventory must be a mapping with aws, defaults, limits, databases")
        raise ConfigErrors(located.errors)

    _check_templates(data, located)
    model: InventoryModel | None = None
    try:
        model = InventoryModel.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            _report(located, error)
    if located.errors or model is None:
        _check_what_parsed(data, located)
        raise ConfigErrors(sorted(located.errors, key=lambda e: (e.line, e.column)))
    inventory = _resolve(model, located)
    if located.errors:
        raise ConfigErrors(sorted(located.errors, key=lambda e: (e.line, e.column)))
    return inventory


def _report(located: _Located, error: Mapping[str, Any]) -> None:
    where: Path_ = tuple(p for p in error["loc"] if not _is_union_tag(p))
    if located.unbuilt_at(where):
        return  # it was reported when it could not be built; the model saw only None
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(where[:-1])
        located.add(where, f"unknown key {where[-1]!r}; allowed here: {allowed}", key=True)
        return
    if kind == "missing":
        located.add(where[:-1], f"missing required key {where[-1]!r}")
        return
    message = str(error["msg"])
    message = message.removeprefix("Value error, ")
    label = ".".join(str(p) for p in where)
    located.add(where, f"{label}: {message}")


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the chosen union member (e.g. 'str', 'int') into the location.
    return isinstance(part, str) and part in ("str", "int", "function-before[_check_duration()]")


def _allowed_keys(where: Path_) -> str:
    model: type[BaseModel] = InventoryModel
    for part in where:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[str(part)].annotation
        inner = _model_in(annotation)
        if inner is None:
            break
        model = inner
    return ", ".join(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _layer(*levels: SettingsModel) -> dict[str, Any]:
    """The settings that apply, most specific last; ``password`` and ``derived_keys`` merge
    key by key (a derived key set to null is removed)."""
    merged: dict[str, Any] = {}
    password: dict[str, Any] = {}
    derived: dict[str, str | None] = {}
    for level in levels:
        for name in level.model_fields_set:
            value = getattr(level, name)
            if value is None and name not in ("master_secret", "test_query", "on_rotated"):
                continue
            if name == "password":
                password.update(value.model_dump(exclude_none=True))
            elif name == "derived_keys":
                derived.update(value)
            else:
                merged[name] = value
    merged["password"] = password
    merged["derived_keys"] = {k: v for k, v in derived.items() if v is not None}
    return merged


class _Names:
    """The database names and secret names met so far; a second of either is reported."""

    def __init__(self, located: _Located) -> None:
        self.located = located
        self.databases: dict[str, int] = {}
        self.secrets: dict[str, Path_] = {}

    def database(self, name: str, d: int) -> None:
        if name not in self.databases:
            self.databases[name] = d
            return
        first = self.located.locate(("databases", self.databases[name], "name"))
        self.located.add(
            ("databases", d, "name"), f"duplicate database name {name!r} (first at line {first[0]})"
        )

    def secret(self, secret_id: str, where: Path_) -> bool:
        """Whether the secret is met for the first time (by its name or its ARN)."""
        name = secret_name(secret_id)
        if name not in self.secrets:
            self.secrets[name] = where
            return True
        first = self.located.locate((*self.secrets[name], "id"))
        self.located.add(
            (*where, "id"),
            f"secret {secret_id!r} is already in the inventory (line {first[0]}); "
            "each secret may be listed once, by name or by ARN",
        )
        return False


def _resolve(model: InventoryModel, located: _Located) -> Inventory:
    specs: list[SecretSpec] = []
    warnings: list[str] = []
    names = _Names(located)
    resolved: _SettingsCache = {}
    wheres: dict[str, Path_] = {}
    for d, database in enumerate(model.databases):
        where_db: Path_ = ("databases", d)
        names.database(database.name, d)
        access = _access(model.aws, model.defaults.aws, database.aws)
        bridge = database.bridge or model.defaults.bridge or model.bridge
        for s, secret in enumerate(database.secrets):
            where: Path_ = (*where_db, "secrets", s)
            if not names.secret(secret.id, where):
                continue
            settings = _settings_of(model.defaults, d, database, secret, resolved)
            for problem in settings.problems:
                located.add((*where, "id"), f"secret {secret.id!r}: {problem}")
            if settings.problems:
                continue
            unreachable = _access_problem(secret.id, access)
            bridged = settings.fields["rotation"] is Rotation.BRIDGE
            if bridged:
                unreachable = unreachable or _bridge_problem(database.name, access, bridge)
            if unreachable:
                located.add((*where, "id"), f"secret {secret.id!r}: {unreachable}")
                continue
            line, column = located.locate((*where, "id"))
            spec = SecretSpec(id=secret.id, line=line, aws=access, **settings.fields)
            if bridged and bridge is not None:
                spec = replace(spec, bridge=_bridge(bridge))
            specs.append(spec)
            wheres[secret.id] = where
            if settings.short:
                warnings.append(
                    f"{located.path}:{line}:{column}: secret {secret.id!r} rotates more often "
                    "than every 10 minutes; Secrets Manager advises against that, since "
                    "every rotation adds a version"
                )
    for secret_id, problem in _master_problems(specs):
        located.add((*wheres[secret_id], "id"), problem)
    listen = _split_listen(model.daemon.listen) if model.daemon.listen else None
    renders = _renders(model.render, located)
    return Inventory(
        path=located.path,
        region=aws_region(model.aws.region),
        endpoint_url=model.aws.endpoint_url,
        profile=model.aws.profile,
        max_write_tps=model.aws.max_write_tps,
        role_arn=model.aws.role_arn,
        external_id=model.aws.external_id,
        session_name=model.aws.session_name,
        max_concurrent=model.limits.max_concurrent,
        max_concurrent_per_host=model.limits.max_concurrent_per_host,
        shutdown_grace=parse_duration(model.daemon.shutdown_grace),
        listen=listen,
        databases=tuple(db.name for db in model.databases),
        secrets=tuple(specs),
        warnings=tuple(warnings),
        renders=renders,
        eventbridge=_eventbridge(model),
        derived_keys=tuple(
            sorted((k, v) for k, v in (model.defaults.derived_keys or {}).items() if v is not None)
        ),
    )


def _renders(models: list[RenderModel], located: _Located) -> tuple[RenderSpec, ...]:
    """The resolved ``render`` entries; a second entry writing the same file is reported."""
    specs: list[RenderSpec] = []
    paths: dict[str, int] = {}
    for r, model in enumerate(models):
        path = os.path.normpath(model.path)
        line, _ = located.locate(("render", r, "path"))
        if path in paths:
            located.add(
                ("render", r, "path"),
                f"render.{r}.path: {path} is already rendered (line {paths[path]}); "
                "each file may be written by one entry",
            )
            continue
        paths[path] = line
        specs.append(
            RenderSpec(
                secret=model.secret,
                path=path,
                template=model.template,
                mode=int(model.mode, 8),
                owner=model.owner,
                group=model.group,
                on_change=tuple(model.on_change) if model.on_change is not None else None,
                on_change_timeout=parse_duration(model.on_change_timeout),
                refresh=parse_duration(model.refresh),
                line=located.locate(("render", r, "secret"))[0],
            )
        )
    return tuple(specs)


def _eventbridge(model: InventoryModel) -> EventBridge | None:
    section = model.events.eventbridge
    if section is None:
        return None
    from_arn = _EVENT_BUS_ARN.match(section.bus)
    region = from_arn.group("region") if from_arn else None
    return EventBridge(
        bus=section.bus,
        region=region or section.region or aws_region(model.aws.region),
        role_arn=section.role_arn,
        endpoint_url=section.endpoint_url or every_service_endpoint(model.aws.endpoint_url),
        source=section.source,
    )


def every_service_endpoint(endpoint_url: str | None) -> str | None:
    """The inventory's Secrets Manager endpoint if it serves every service (an emulator); an
    AWS endpoint (a VPC endpoint for Secrets Manager) serves only that one."""
    if endpoint_url is None:
        return None
    host = (urlsplit(endpoint_url).hostname or "").lower()
    if host.endswith((".amazonaws.com", ".amazonaws.com.cn", ".api.aws")):
        return None
    return endpoint_url


def _access(*levels: AccessModel | None) -> AwsAccess:
    """The ``aws:`` settings that apply to a database, key by key (top level < defaults <
    database); a key set to null on a level (``role_arn: null``) undoes the one below."""
    merged: dict[str, Any] = {}
    for level in levels:
        if level is not None:
            merged.update({name: getattr(level, name) for name in level.model_fields_set})
    keys = {f for f in AccessModel.model_fields if f in merged}
    access = AwsAccess(**{k: merged[k] for k in keys})
    return replace(access, region=aws_region(access.region))


def _bridge(model: BridgeModel) -> Bridge:
    return Bridge(
        queue_url=model.queue_url,
        function_arn=model.function_arn,
        scan_every=parse_duration(model.scan_every),
    )


def _bridge_problem(database: str, access: AwsAccess, bridge: BridgeModel | None) -> str | None:
    """Why a secret of ``database`` cannot be rotated through the bridge."""
    if bridge is None:
        return (
            "rotation: bridge needs a bridge: block (queue_url, function_arn) at the top level, "
            f"in defaults or on database {database!r}"
        )
    region = _bridge(bridge).region
    if access.region is not None and region != access.region:
        return (
            f"the bridge function is in region {region} but the secret in {access.region}: "
            "Secrets Manager invokes a rotation function of the secret's own region; deploy "
            f"one there and set bridge.function_arn on database {database!r}"
        )
    return None


def _access_problem(secret_id: str, access: AwsAccess) -> str | None:
    """Why a secret named by ARN cannot be reached with its database's ``aws:`` settings."""
    located = secret_location(secret_id)
    if located is None:
        return None
    account, region = located
    if access.region is not None and region != access.region:
        return (
            f"its ARN is in region {region} but the database's aws.region is {access.region}; "
            f"set aws.region: {region} on the database"
        )
    if access.account is not None and account != access.account:
        return (
            f"its ARN is in account {account} but the database's aws.role_arn is in account "
            f"{access.account}; set aws.role_arn on the database to a role in {account}"
        )
    return None


def _master_problems(specs: list[SecretSpec]) -> list[tuple[str, str]]:
    """Masters that cannot be resolved in one place: a name read by databases in different
    accounts or regions, or an ARN in an account no role of the inventory reaches."""
    roles = {spec.aws.account for spec in specs if spec.aws.account is not None}
    where: dict[str, dict[AwsAccess, str]] = {}
    problems: list[tuple[str, str]] = []
    for spec in specs:
        master = spec.master_secret
        if master is None:
            continue
        located = secret_location(master)
        if located is None:
            where.setdefault(master, {}).setdefault(spec.aws, spec.id)
        elif spec.aws.account is not None and located[0] not in roles | {spec.aws.account}:
            problems.append(
                (
                    spec.id,
                    f"master_secret {master!r} is in account {located[0]}, which no "
                    f"aws.role_arn of the inventory reaches; give a database (or this one) an "
                    f"aws.role_arn in account {located[0]}, or copy the master into account "
                    f"{spec.aws.account}",
                )
            )
    for master, accesses in where.items():
        if len(accesses) > 1:
            labels = ", ".join(sorted(a.label for a in accesses))
            problems.append(
                (
                    list(accesses.values())[-1],
                    f"master_secret {master!r} is named by databases in several accounts or "
                    f"regions ({labels}); name each database's master by its full ARN",
                )
            )
    return list(dict.fromkeys(problems))


_Part = TypeVar("_Part", bound=BaseModel)


def _check_what_parsed(data: Any, located: _Located) -> None:
    """The checks across entries, on every entry that parsed, for a file with errors.

    Each settings layer and each secret is validated on its own, without the keys that failed
    (they are reported already), so that duplicate names, a window not shorter than its
    schedule and an impossible password policy are reported with the rest, in one pass. A check
    that needs a setting that failed in one of the secret's layers is skipped: with that setting
    left out, its verdict would be about a file the operator did not write.
    """
    if not isinstance(data, dict):
        return
    defaults, unknown_defaults = _parsed_part(
        DefaultsModel, data.get("defaults", {}), ("defaults",), located
    )
    databases = data.get("databases")
    if not isinstance(databases, list):
        return
    names = _Names(located)
    for d, database in enumerate(databases):
        if not isinstance(database, dict):
            continue
        if isinstance(database.get("name"), str) and database["name"]:
            names.database(database["name"], d)
        own = {k: v for k, v in database.items() if k in SettingsModel.model_fields}
        layer, unknown_database = _parsed_part(SettingsModel, own, ("databases", d), located)
        secrets = database.get("secrets")
        for s, item in enumerate(secrets if isinstance(secrets, list) else ()):
            where: Path_ = ("databases", d, "secrets", s)
            secret, unknown = _parsed_part(SecretModel, item, where, located)
            if secret is None or not names.secret(secret.id, where):
                continue
            settings = _layer(defaults or SettingsModel(), layer or SettingsModel(), secret)
            unknown |= unknown_defaults | unknown_database
            if defaults is None or layer is None:
                unknown |= set(SettingsModel.model_fields)
            for problem in _problems(settings, unknown):
                located.add((*where, "id"), f"secret {secret.id!r}: {problem}")


def _parsed_part(
    model: type[_Part], value: Any, where: Path_, located: _Located
) -> tuple[_Part | None, frozenset[str]]:
    """``value`` validated as ``model`` without its keys that fail, and the keys left out;
    None when even that fails (it is not a mapping, or a required key failed)."""
    if not isinstance(value, dict):
        return None, frozenset()
    # A value that could not be built from YAML is None here, which may pass for "not set".
    left_out = {key for key in value if located.unbuilt_within((*where, key))}
    for _ in range(2):
        try:
            kept = {k: v for k, v in value.items() if k not in left_out}
            return model.model_validate(kept), frozenset(left_out)
        except ValidationError as exc:
            left_out |= {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
    return None, frozenset(left_out)


def _check_templates(data: dict[str, Any], located: _Located) -> None:
    """Compile every derived key's template offline, against the keys a secret of each engine
    it applies to may hold; report each problem at its line and column in the file.

    A template on a secret or a database applies to that database's engine; one in
    ``defaults`` to the engine of every database that does not set the same key itself. A
    database that names no engine takes its engine from each secret: any installed engine's
    keys are accepted there.
    """
    databases = data.get("databases")
    databases = [db if isinstance(db, dict) else {} for db in databases or ()]
    engines = [db.get("engine") if isinstance(db.get("engine"), str) else None for db in databases]
    reported: set[tuple[int, int]] = set()  # one problem per place, for the first engine
    if not any(_templates_in(level) for level in _levels(data, databases)):
        return
    # Only inventories with templates pay for importing Jinja2: validate stays quick.
    from rotd import templates

    def check(where: Path_, key: str, source: str, applies_to: list[str | None]) -> None:
        for engine in dict.fromkeys(applies_to or [None]):
            names = templates.secret_names(engine)
            for problem in templates.problems(source, names, engine=engine or ""):
                line, column = located.template_position((*where, key), problem)
                if (line, column) not in reported:
                    reported.add((line, column))
                    reason = f"derived key {key!r}: {problem.reason}"
                    located.errors.append(ConfigError(located.path, line, column, reason))

    for key, source in _templates_in(data.get("defaults")):
        applies = [e for db, e in zip(databases, engines, strict=True) if key not in _own(db)]
        check(("defaults", "derived_keys"), key, source, applies)
    for d, database in enumerate(databases):
        for key, source in _templates_in(database):
            check(("databases", d, "derived_keys"), key, source, [engines[d]])
        secrets = database.get("secrets")
        for s, secret in enumerate(secrets if isinstance(secrets, list) else ()):
            where: Path_ = ("databases", d, "secrets", s, "derived_keys")
            for key, source in _templates_in(secret):
                check(where, key, source, [engines[d]])


def _levels(data: dict[str, Any], databases: list[dict[str, Any]]) -> Iterator[Any]:
    """Every level that may hold settings: defaults, each database, each secret."""
    yield data.get("defaults")
    for database in databases:
        yield database
        secrets = database.get("secrets")
        yield from secrets if isinstance(secrets, list) else ()


def _own(level: Any) -> dict[str, Any]:
    """A level's ``derived_keys`` mapping, or an empty one when it has none (or not a mapping)."""
    found = level.get("derived_keys") if isinstance(level, dict) else None
    return found if isinstance(found, dict) else {}


def _templates_in(level: Any) -> list[tuple[str, str]]:
    return [(k, v) for k, v in _own(level).items() if isinstance(k, str) and isinstance(v, str)]


@dataclass(frozen=True)
class _Settings:
    """What one combination of defaults, database and secret settings resolves to."""

    fields: dict[str, Any]  # SecretSpec's fields but id and line
    problems: tuple[str, ...]  # each to be reported as "secret 'ID': PROBLEM"
    short: bool  # rotates more often than every 10 minutes


_SettingsCache = dict[tuple[int, tuple[tuple[str, Any], ...]], _Settings]


def _settings_of(
    defaults: SettingsModel,
    d: int,
    database: DatabaseModel,
    secret: SecretModel,
    cache: _SettingsCache,
) -> _Settings:
    """The secret's resolved settings, worked out once for all that share database and settings.

    Thousands of secrets typically differ only in their id; each would otherwise check the
    same password policy and build the same schedule, window and hooks again.
    """
    own = tuple(
        (name, getattr(secret, name)) for name in sorted(secret.model_fields_set) if name != "id"
    )
    try:
        found = cache.get((d, own))
    except TypeError:  # an unhashable setting (an exec hook's argv list): resolve it alone
        return _settings(_layer(defaults, database, secret), database)
    if found is None:
        found = cache[(d, own)] = _settings(_layer(defaults, database, secret), database)
    return found


def _settings(settings: dict[str, Any], database: DatabaseModel) -> _Settings:
    schedule, window = _timing(settings)
    strategy = settings.get("strategy") or Strategy.SINGLE_USER
    policy = PasswordPolicy(**settings["password"])
    problems = _problems(settings)
    tls_mode = settings.get("tls")
    ca_file = settings.get("ca_file")
    engine_settings = _engine_settings(database)
    if database.engine is not None:
        problem = _engine_problem(
            database.engine, Strategy(strategy), tls_mode or TlsMode.PREFER, engine_settings
        )
        if problem:
            problems = (*problems, problem)
    if database.engine == EXEC_ENGINE and settings.get("test_query") is not None:
        problems = (
            *problems,
            "test_query does not apply to engine exec, whose test_login command is the test; "
            "set test_query: null on the database",
        )
    fields = dict(
        database=database.name,
        rotation=Rotation(settings.get("rotation") or Rotation.DAEMON),
        strategy=Strategy(strategy),
        schedule=schedule,
        window=window,
        timezone=ZoneInfo(settings.get("timezone") or "UTC"),
        password=policy,
        tls=Tls(mode=tls_mode or TlsMode.PREFER, ca_file=ca_file),
        tls_set=tls_mode is not None,
        master_secret=settings.get("master_secret"),
        test_query=settings.get("test_query"),
        host=database.host,
        port=database.port,
        dbname=database.dbname,
        engine=database.engine,
        engine_settings=engine_settings,
        hooks=tuple(_hook(h) for h in settings.get("on_rotated") or ()),
        verify_endpoints=tuple(
            _split_host_port(e, "a verify endpoint", "") for e in database.verify_endpoints
        ),
        nodes=tuple(_split_host_port(n, "a node", "") for n in database.nodes),
        derived_keys=tuple(sorted(settings["derived_keys"].items())),
    )
    return _Settings(fields, tuple(problems), schedule.min_interval() < SHORT_SCHEDULE)


def _timing(settings: dict[str, Any]) -> tuple[Schedule, timedelta]:
    schedule = parse_schedule(settings.get("schedule") or DEFAULT_SCHEDULE)
    window_text = settings.get("window")
    return schedule, parse_duration(DEFAULT_WINDOW if window_text is None else window_text)


def _problems(settings: dict[str, Any], unknown: Set[str] = frozenset()) -> tuple[str, ...]:
    """What is wrong with a secret's layered settings; the checks that need a setting named in
    ``unknown`` (one that failed validation) are skipped."""
    problems = []
    if not unknown & {"schedule", "window"}:
        schedule, window = _timing(settings)
        if window >= schedule.min_interval() and window > timedelta(0):
            problems.append(
                f"window {_human(window)} is not shorter than its schedule {schedule.text}; "
                "the next rotation would be due before the window closes"
            )
    if "password" not in unknown:
        problem = PasswordPolicy(**settings["password"]).problem()
        if problem:
            problems.append(f"password: {problem}")
    return tuple(problems)


def _engine_settings(database: DatabaseModel) -> Settings:
    """The database's block for its engine, as the engine receives it."""
    if database.exec is None:
        return Settings()
    return Settings(
        {
            "set_password": database.exec.set_password,
            "test_login": database.exec.test_login,
            "mirror_user": database.exec.mirror_user,
            "timeout_s": parse_duration(database.exec.timeout).total_seconds(),
        }
    )


def _engine_problem(
    name: str, strategy: Strategy, tls: TlsMode, engine_settings: Settings
) -> str | None:
    """Why the database's ``engine`` cannot rotate with these settings, or None."""
    try:
        capabilities = engine_capabilities(installed()[name], engine_settings)
    except EngineError as exc:
        return str(exc)
    lacking = capabilities.lacking(alternating=strategy is Strategy.ALTERNATING_USERS, tls=tls)
    return None if lacking is None else f"engine {name!r} lacks the capability {lacking}"


def _hook(model: HookModel) -> Hook:
    return Hook(
        argv=tuple(model.exec) if model.exec is not None else None,
        url=model.webhook,
        timeout=parse_duration(model.timeout),
        retries=model.retries,
        include_secret=model.include_secret,
        hmac_key_file=model.hmac_key_file,
    )


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
