"""Secrets Manager as the rotation protocol sees it: versions, staging labels, values.

:class:`SecretStore` is the interface the protocol is written against; :class:`AwsSecretStore`
implements it over aioboto3 and is the only module that touches botocore. Every call has a
connect and read deadline and uses botocore's adaptive retry mode; failures become
:class:`rotd.errors.StoreError` with a category and a sentence an operator can act on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol

import aioboto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.parsers import ResponseParserError

from rotd.errors import AwsError, Category, Missing, StoreError
from rotd.inventory import AwsAccess, Inventory, aws_region, every_service_endpoint
from rotd.observability import redactor
from rotd.roles import assumed_session

CURRENT = "AWSCURRENT"
PENDING = "AWSPENDING"
PREVIOUS = "AWSPREVIOUS"
NO_REGION = (
    "no AWS region: set aws.region in the inventory (or --region), "
    "or AWS_REGION or AWS_DEFAULT_REGION in rotd's environment"
)


@dataclass(frozen=True)
class Replica:
    """One region a multi-region secret is replicated to, as its primary reports it."""

    region: str
    status: str  # InSync, InProgress or Failed
    message: str = ""


@dataclass(frozen=True)
class SecretDescription:
    arn: str
    name: str
    rotation_enabled: bool
    rotation_lambda: str | None
    kms_key_id: str | None
    # Only versions that carry at least one label (moto also lists unlabelled ones).
    versions: Mapping[str, frozenset[str]]
    replicas: tuple[Replica, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    # Secrets Manager's own rotation record (a bridged secret's schedule and history).
    last_rotated: datetime | None = None
    next_rotation: datetime | None = None

    def version_with(self, stage: str) -> str | None:
        for version_id, stages in self.versions.items():
            if stage in stages:
                return version_id
        return None

    def unfinished_pending(self) -> str | None:
        """The version that holds AWSPENDING without AWSCURRENT: an unfinished rotation."""
        pending = self.version_with(PENDING)
        if pending is not None and CURRENT not in self.versions[pending]:
            return pending
        return None


@dataclass(frozen=True)
class SecretValue:
    arn: str
    name: str
    version_id: str
    stages: frozenset[str]
    created: datetime
    string: str = field(repr=False)


class SecretStore(Protocol):
    async def describe(self, secret_id: str) -> SecretDescription: ...

    async def get_value(
        self, secret_id: str, *, version_id: str | None = None, stage: str | None = None
    ) -> SecretValue:
        """Read one version, by id or by label (one of the two is required)."""

    async def put_pending(self, secret_id: str, token: str, string: str) -> bool:
        """Store ``string`` as version ``token`` labelled AWSPENDING; idempotent per token.

        False when version ``token`` already exists with another value: Secrets Manager
        never changes a version, so the first writer of a version id wins.
        """

    async def move_current(self, secret_id: str, token: str, from_version: str) -> None:
        """Move AWSCURRENT from ``from_version`` to ``token``; AWSPREVIOUS follows.

        Refused (CONFLICT) when AWSCURRENT is no longer on ``from_version``; the error's
        ``retried`` says whether an earlier attempt of the call was sent.
        """

    async def remove_stage(self, secret_id: str, stage: str, version_id: str) -> None:
        """Take ``stage`` off ``version_id``."""

    async def move_stage(
        self, secret_id: str, stage: str, to_version: str, from_version: str | None
    ) -> None:
        """Put ``stage`` on ``to_version``, taking it off ``from_version`` (where it is now;
        None when no version has it)."""

    async def unlabelled_versions(self, secret_id: str) -> list[str]:
        """Ids of the versions that carry no label, newest first as far as AWS says."""


@dataclass(frozen=True)
class AwsConnection:
    """How to reach Secrets Manager: region, optional endpoint and profile, the role to
    assume (from the profile's or environment's credentials), limits."""

    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    max_write_tps: float = 40.0
    max_pool_connections: int = 32
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0
    max_attempts: int = 5
    role_arn: str | None = None
    external_id: str | None = field(default=None, repr=False)
    session_name: str | None = None

    @property
    def access(self) -> AwsAccess:
        return AwsAccess(
            region=self.region,
            endpoint_url=self.endpoint_url,
            profile=self.profile,
            role_arn=self.role_arn,
            external_id=self.external_id,
            session_name=self.session_name,
        )

    def to(self, access: AwsAccess) -> AwsConnection:
        """This connection's limits, for the account, region and identity of ``access``."""
        return replace(self, **access.fields())


def connection_for(inventory: Inventory) -> AwsConnection:
    """How the inventory says to reach Secrets Manager (its top-level ``aws:`` block)."""
    return AwsConnection(
        region=inventory.region,
        endpoint_url=inventory.endpoint_url,
        profile=inventory.profile,
        max_write_tps=inventory.max_write_tps,
        max_pool_connections=max(10, inventory.max_concurrent * 2),
        role_arn=inventory.role_arn,
        external_id=inventory.external_id,
        session_name=inventory.session_name,
    )


class RateLimit:
    """Spaces calls at least ``1 / rate`` seconds apart: never more than ``rate`` in any
    one-second window, so there is no burst above the rate either."""

    def __init__(self, rate: float) -> None:
        self._interval_s = 1 / rate
        self._next = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            wait = self._next - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next = max(self._next, time.monotonic()) + self._interval_s


@asynccontextmanager
async def open_client(
    service: str,
    connection: AwsConnection,
    *,
    retry_mode: str = "adaptive",
) -> AsyncIterator[Any]:
    """An aioboto3 client of ``service`` with rotd's deadlines and retries.

    Every AWS client rotd makes comes from here, so that no call goes without a deadline. The
    inventory's ``endpoint_url`` applies to every service (an emulator serves them all). With
    ``role_arn``, the client acts as that role, assumed again before its credentials expire.
    """
    region = aws_region(connection.region)
    if connection.role_arn is not None:
        base = replace(
            connection,
            role_arn=None,
            external_id=None,
            session_name=None,
            endpoint_url=every_service_endpoint(connection.endpoint_url),
        )
        session = assumed_session(
            connection.role_arn,
            region,
            lambda: open_client("sts", base, retry_mode="standard"),
            external_id=connection.external_id,
            session_name=connection.session_name,
        )
    else:
        session = aioboto3.Session(profile_name=connection.profile, region_name=region)
    config = Config(
        retries={"mode": retry_mode, "max_attempts": connection.max_attempts},
        connect_timeout=connection.connect_timeout_s,
        read_timeout=connection.read_timeout_s,
        max_pool_connections=connection.max_pool_connections,
    )
    async with session.client(
        service, endpoint_url=connection.endpoint_url, config=config
    ) as client:
        yield client


class AwsClients:
    """The base of rotd's AWS services: the clients a subclass opens on ``self._stack`` (with
    :func:`open_client`) are closed when its ``async with`` block ends."""

    def __init__(self, connection: AwsConnection) -> None:
        self._connection = connection
        self._stack = AsyncExitStack()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()


class AwsSecretStore(AwsClients):
    """Secrets Manager over aioboto3. Use as ``async with AwsSecretStore(conn) as store``."""

    def __init__(
        self,
        connection: AwsConnection,
        *,
        writes: RateLimit | None = None,
        reads: Mapping[str, RateLimit] | None = None,
    ) -> None:
        """``writes`` paces this store's writes together with other stores' (those of one
        account and region), and ``reads`` its batch reads (a limiter per operation); by
        default the store has limiters of its own."""
        super().__init__(connection)
        self._client: Any = None
        self._writes = writes or RateLimit(connection.max_write_tps)
        self._reads = reads or batch_read_limits()
        self.calls: dict[str, int] = {}
        self._kept: dict[tuple[str, str], SecretValue] | None = None

    def keep_versions(self) -> None:
        """From now on, remember each version read and answer a read of it by id from memory.

        Secrets Manager never changes a version once written, so this is always right; labels
        move, so a read by label still asks. For a one-shot command: ``rotate`` reads every
        secret to find shared logins, and each rotation then reads the same version again.
        """
        self._kept = {}

    async def __aenter__(self) -> AwsSecretStore:
        try:
            self._client = await self._stack.enter_async_context(
                open_client("secretsmanager", self._connection)
            )
        except (BotoCoreError, ClientError) as exc:
            await self._stack.aclose()
            raise translate(exc, "-", "connect") from None
        self._client.meta.events.register("before-call.secrets-manager.*", self._count)
        # Writes are paced as each request goes out, retries included and after the adaptive
        # retry mode's own wait, so that what reaches Secrets Manager stays under the limit.
        self._client.meta.events.register_last("before-send", self._pace)
        return self

    async def _pace(self, event_name: str, **_: Any) -> None:
        operation = event_name.rpartition(".")[2]
        if operation in _WRITES:
            await self._writes.acquire()
        elif operation in self._reads:
            await self._reads[operation].acquire()

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] = self.calls.get(model.name, 0) + 1

    async def _call(self, operation: str, secret_id: str, **kwargs: Any) -> dict[str, Any]:
        try:
            method = getattr(self._client, operation)
            result: dict[str, Any] = await method(SecretId=secret_id, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise translate(exc, secret_id, operation) from None
        except AwsError as exc:  # the role could not be assumed
            raise StoreError(secret_id, operation, exc.category, exc.reason) from None
        return result

    async def _what_is_missing(
        self, exc: StoreError, secret_id: str, version_id: str | None, stage: str | None
    ) -> StoreError:
        """A read found nothing: say whether the secret, the version, the label or only the
        value is missing, from a look at the secret's versions (AWS's answer is the same
        ResourceNotFoundException for all four)."""
        try:
            r = await self._call("describe_secret", secret_id)
        except StoreError:
            return exc  # the secret itself (or describing it) is the problem
        versions = {v: list(s or ()) for v, s in (r.get("VersionIdsToStages") or {}).items()}
        if version_id is not None and version_id not in versions:
            missing, reason = Missing.VERSION, f"the secret has no version {version_id}"
        elif version_id is None and not any(stage in s for s in versions.values()):
            missing, reason = Missing.STAGE, f"no version of the secret carries the label {stage}"
        else:
            found = version_id or next(v for v, s in versions.items() if stage in s)
            labels = ", ".join(versions[found]) or "no label"
            missing = Missing.VALUE
            reason = (
                f"version {found} ({labels}) exists but holds no value: a rotation staged it "
                "and its createSecret never wrote it"
            )
        return StoreError(secret_id, exc.operation, Category.NOT_FOUND, reason, missing=missing)

    async def describe(self, secret_id: str) -> SecretDescription:
        """Refused (REPLICA) for a read-only replica: only the primary can be rotated."""
        r = await self._call("describe_secret", secret_id)
        primary = r.get("PrimaryRegion")
        region = self._client.meta.region_name
        if primary and primary != region:
            raise replica_refused(secret_id, str(r["ARN"]), region, str(primary))
        return description_of(r, r.get("VersionIdsToStages"))

    async def list_descriptions(
        self, names: Sequence[str] = (), *, max_pages: int
    ) -> AsyncIterator[list[SecretDescription]]:
        """ListSecrets, page by page (100 secrets a page), at most ``max_pages`` pages: the
        secrets whose name starts with one of ``names`` (at most 10), or every secret.

        Replicas of a primary in another region are left out (:meth:`describe` says why)."""
        kwargs: dict[str, Any] = {"MaxResults": 100}
        if names:
            kwargs["Filters"] = [{"Key": "name", "Values": list(names)}]
        region = self._client.meta.region_name
        for _ in range(max_pages):
            try:
                r = await self._client.list_secrets(**kwargs)
            except (BotoCoreError, ClientError) as exc:
                raise translate(exc, "-", "list_secrets") from None
            except AwsError as exc:
                raise StoreError("-", "list_secrets", exc.category, exc.reason) from None
            yield [
                description_of(entry, entry.get("SecretVersionsToStages"))
                for entry in r.get("SecretList") or ()
                if entry.get("PrimaryRegion") in (None, "", region)
            ]
            if not r.get("NextToken"):
                return
            kwargs["NextToken"] = r["NextToken"]

    async def current_values(self, secret_ids: Sequence[str]) -> list[SecretValue]:
        """BatchGetSecretValue: the AWSCURRENT values of up to 20 secrets in one call.

        A secret it could not read, or one that holds binary data, is left out: read it alone
        to learn why. The version returned is the one the service calls current; compare it
        with a description's (moto returns the first version once AWSCURRENT has moved)."""
        try:
            r = await self._client.batch_get_secret_value(SecretIdList=list(secret_ids))
        except (BotoCoreError, ClientError) as exc:
            raise translate(exc, "-", "batch_get_secret_value") from None
        except AwsError as exc:
            raise StoreError("-", "batch_get_secret_value", exc.category, exc.reason) from None
        return [value_of(v) for v in r.get("SecretValues") or () if "SecretString" in v]

    async def get_value(
        self, secret_id: str, *, version_id: str | None = None, stage: str | None = None
    ) -> SecretValue:
        if self._kept is not None and version_id is not None and stage is None:
            kept = self._kept.get((secret_id, version_id))
            if kept is not None:
                return kept
        # Always name the version: moto answers an unqualified read with the first version.
        kwargs: dict[str, str] = {}
        if version_id is not None:
            kwargs["VersionId"] = version_id
        if stage is not None:
            kwargs["VersionStage"] = stage
        if not kwargs:
            kwargs["VersionStage"] = CURRENT
        try:
            r = await self._call("get_secret_value", secret_id, **kwargs)
        except StoreError as exc:
            if exc.category is not Category.NOT_FOUND:
                raise
            stage = kwargs.get("VersionStage")
            raise await self._what_is_missing(exc, secret_id, version_id, stage) from None
        if "SecretString" not in r:
            raise StoreError(
                secret_id,
                "get_secret_value",
                Category.BAD_SECRET,
                "the secret holds binary data, not a JSON string",
            )
        value = value_of(r)
        if self._kept is not None:
            self._kept[(secret_id, value.version_id)] = value
        return value

    async def put_pending(self, secret_id: str, token: str, string: str) -> bool:
        try:
            await self._client.put_secret_value(
                SecretId=secret_id,
                ClientRequestToken=token,
                SecretString=string,
                VersionStages=[PENDING],
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceExistsException":
                return False
            raise translate(exc, secret_id, "put_secret_value") from None
        except BotoCoreError as exc:
            raise translate(exc, secret_id, "put_secret_value") from None
        except AwsError as exc:
            raise StoreError(secret_id, "put_secret_value", exc.category, exc.reason) from None
        return True

    async def move_current(self, secret_id: str, token: str, from_version: str) -> None:
        await self._call(
            "update_secret_version_stage",
            secret_id,
            VersionStage=CURRENT,
            MoveToVersionId=token,
            RemoveFromVersionId=from_version,
        )

    async def unlabelled_versions(self, secret_id: str) -> list[str]:
        r = await self._call("list_secret_version_ids", secret_id, IncludeDeprecated=True)
        versions = [v for v in r.get("Versions") or () if not v.get("VersionStages")]
        versions.sort(key=lambda v: v.get("CreatedDate") or 0, reverse=True)
        return [str(v["VersionId"]) for v in versions]

    async def remove_stage(self, secret_id: str, stage: str, version_id: str) -> None:
        await self._call(
            "update_secret_version_stage",
            secret_id,
            VersionStage=stage,
            RemoveFromVersionId=version_id,
        )

    async def move_stage(
        self, secret_id: str, stage: str, to_version: str, from_version: str | None
    ) -> None:
        moved = {"RemoveFromVersionId": from_version} if from_version else {}
        await self._call(
            "update_secret_version_stage",
            secret_id,
            VersionStage=stage,
            MoveToVersionId=to_version,
            **moved,
        )

    async def tag(self, secret_id: str, key: str, value: str) -> None:
        await self._call("tag_resource", secret_id, Tags=[{"Key": key, "Value": value}])

    async def untag(self, secret_id: str, key: str) -> None:
        await self._call("untag_resource", secret_id, TagKeys=[key])

    async def start_rotation(self, secret_id: str) -> str:
        """RotateSecret with the secret's configured function and rules: Secrets Manager
        stages AWSPENDING on a new version and invokes the function. Returns that version."""
        r = await self._call("rotate_secret", secret_id)
        return str(r.get("VersionId") or "")


def description_of(r: Mapping[str, Any], versions: Mapping[str, Any] | None) -> SecretDescription:
    """A secret's description from a DescribeSecret answer or a ListSecrets entry (which name
    the versions' labels differently: pass them as ``versions``)."""
    return SecretDescription(
        arn=r["ARN"],
        name=r["Name"],
        rotation_enabled=bool(r.get("RotationEnabled")),
        rotation_lambda=r.get("RotationLambdaARN") or None,
        kms_key_id=r.get("KmsKeyId") or None,
        tags={str(t["Key"]): str(t.get("Value", "")) for t in r.get("Tags") or ()},
        last_rotated=_moment(r.get("LastRotatedDate")),
        next_rotation=_moment(r.get("NextRotationDate")),
        versions={vid: frozenset(stages) for vid, stages in (versions or {}).items() if stages},
        replicas=tuple(
            Replica(str(x["Region"]), str(x.get("Status", "")), str(x.get("StatusMessage", "")))
            for x in r.get("ReplicationStatus") or ()
        ),
    )


def _moment(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None


def value_of(r: Mapping[str, Any]) -> SecretValue:
    """One version's value from a GetSecretValue answer or a BatchGetSecretValue entry."""
    return SecretValue(
        arn=r["ARN"],
        name=r["Name"],
        version_id=r["VersionId"],
        stages=frozenset(r.get("VersionStages") or ()),
        created=r["CreatedDate"],
        string=r["SecretString"],
    )


def replica_refused(secret_id: str, arn: str, region: str, primary: str) -> StoreError:
    """Why rotd will not rotate the replica ``arn`` (in ``region``) of a secret whose primary
    is in ``primary``: Secrets Manager makes replicas read-only and copies the primary's
    versions to them, so the primary is what to rotate."""
    primary_arn = arn.replace(f":secretsmanager:{region}:", f":secretsmanager:{primary}:", 1)
    return StoreError(
        secret_id,
        "describe_secret",
        Category.REPLICA,
        f"this is a read-only replica in {region} of a secret whose primary is {primary_arn}; "
        f"nothing was changed. Rotate the primary: set aws.region: {primary} on its database "
        "(or name it by the primary's ARN); Secrets Manager copies each new version to the "
        "replicas",
    )


# The calls aws.max_write_tps limits (the rotation protocol's only writes).
# TagResource and UntagResource: the bridge's failure reports (docs/bridge.md).
_WRITES = frozenset(
    {"PutSecretValue", "UpdateSecretVersionStage", "TagResource", "UntagResource", "RotateSecret"}
)
# The batch reads of start-up and reload (rotd.survey), each paced per account and region at
# BATCH_READS_TPS: their quotas (100 per second each) are far below the 10,000 of DescribeSecret
# and GetSecretValue, and a burst must not trip them for the applications.
BATCH_READS = ("ListSecrets", "BatchGetSecretValue")
BATCH_READS_TPS = 80.0


def batch_read_limits() -> dict[str, RateLimit]:
    """A limiter for each batch read, for one account and region."""
    return {operation: RateLimit(BATCH_READS_TPS) for operation in BATCH_READS}


_ACCESS_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "ExpiredToken",
        "SignatureDoesNotMatch",
    }
)
_THROTTLE_CODES = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
)
_PERMISSION_HINT = {
    "connect": "Secrets Manager",
    "describe_secret": "secretsmanager:DescribeSecret",
    "get_secret_value": "secretsmanager:GetSecretValue",
    "put_secret_value": "secretsmanager:PutSecretValue",
    "update_secret_version_stage": "secretsmanager:UpdateSecretVersionStage",
    "list_secret_version_ids": "secretsmanager:ListSecretVersionIds",
    "list_secrets": "secretsmanager:ListSecrets",
    "batch_get_secret_value": "secretsmanager:BatchGetSecretValue",
    "create_secret": "secretsmanager:CreateSecret",
    "update_secret": "secretsmanager:UpdateSecret",
    "tag_resource": "secretsmanager:TagResource",
    "untag_resource": "secretsmanager:UntagResource",
    "rotate_secret": "secretsmanager:RotateSecret",
}


def translate(exc: Exception, secret_id: str, operation: str) -> StoreError:
    """Turn a botocore failure of a Secrets Manager call into a StoreError that says what to
    do about it (for a refused call: the exact action to allow), and whether botocore had sent
    the call more than once (an earlier attempt may have been carried out)."""
    error = _translate(exc, secret_id, operation)
    if isinstance(exc, ClientError):
        metadata = exc.response.get("ResponseMetadata", {})
        error.retried = int(metadata.get("RetryAttempts") or 0) > 0
    return error


def _translate(exc: Exception, secret_id: str, operation: str) -> StoreError:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = redactor.scrub(str(error.get("Message", "")).strip())
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code == "ResourceNotFoundException":
            return StoreError(
                secret_id,
                operation,
                Category.NOT_FOUND,
                "Secrets Manager cannot find it: no secret has this name or ARN in this region "
                "(check both, and the region)",
                missing=Missing.SECRET,
            )
        if code == "ResourceExistsException":
            return StoreError(
                secret_id,
                operation,
                Category.CONFLICT,
                "a secret with this name already exists (one scheduled for deletion counts too)",
            )
        if code in _ACCESS_CODES or status == 403:
            action = _PERMISSION_HINT.get(operation, operation)
            return StoreError(
                secret_id,
                operation,
                Category.PERMISSION,
                f"access denied ({code}): allow {action} on this secret for the identity rotd "
                f"uses; AWS said: {message}",
            )
        if code in ("DecryptionFailure", "EncryptionFailure") or code.startswith("KMS"):
            return StoreError(
                secret_id,
                operation,
                Category.PERMISSION,
                f"cannot use the secret's KMS key ({code}): it must exist and be enabled, and "
                f"the identity needs kms:Decrypt and kms:GenerateDataKey on it; AWS said: "
                f"{message}",
            )
        if code in _THROTTLE_CODES:
            return StoreError(
                secret_id, operation, Category.THROTTLED, f"throttled by Secrets Manager ({code})"
            )
        if status >= 500 or code in ("InternalServiceError", "InternalFailure"):
            return StoreError(
                secret_id,
                operation,
                Category.SERVER,
                f"Secrets Manager failed ({code or status}): {message}",
            )
        return StoreError(secret_id, operation, Category.CONFLICT, f"refused ({code}): {message}")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return StoreError(
            secret_id,
            operation,
            Category.PERMISSION,
            "no AWS credentials found: set a profile (aws.profile in the inventory, or "
            "--profile), AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an instance or task role",
        )
    if isinstance(exc, NoRegionError):
        return StoreError(
            secret_id,
            operation,
            Category.PERMISSION,
            NO_REGION,
        )
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return StoreError(
            secret_id, operation, Category.TIMEOUT, f"Secrets Manager did not answer in time: {exc}"
        )
    if isinstance(exc, EndpointConnectionError):
        return StoreError(
            secret_id, operation, Category.UNREACHABLE, f"cannot reach Secrets Manager: {exc}"
        )
    return StoreError(
        secret_id, operation, Category.UNREACHABLE, f"call to Secrets Manager failed: {exc}"
    )


def aws_error(exc: Exception, operation: str) -> AwsError:
    """A botocore failure of a call to an AWS service other than Secrets Manager (STS, IAM,
    SQS, Lambda), as rotd's :class:`AwsError` saying what is wrong."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", "")).strip()
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if "AccessDenied" in code or code in ("UnauthorizedOperation", "AuthorizationError"):
            return AwsError(operation, Category.PERMISSION, f"access denied ({code}): {message}")
        if code in ("InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken"):
            return AwsError(
                operation, Category.AUTH, f"AWS does not accept the credentials ({code})"
            )
        if code == "NoSuchEntity":
            return AwsError(operation, Category.NOT_FOUND, f"IAM has no such entity: {message}")
        if code in ("Throttling", "ThrottlingException", "TooManyRequestsException"):
            return AwsError(operation, Category.THROTTLED, f"throttled ({code})")
        if status >= 500:
            return AwsError(operation, Category.SERVER, f"AWS failed ({code or status})")
        return AwsError(operation, Category.UNSUPPORTED, f"refused ({code}): {message}")
    if isinstance(exc, ResponseParserError):
        return AwsError(
            operation,
            Category.UNSUPPORTED,
            "the endpoint did not answer as the API does (an emulator that lacks it?)",
        )
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AwsError(
            operation,
            Category.AUTH,
            "no AWS credentials found: set aws.profile in the inventory, "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or an instance or task role",
        )
    if isinstance(exc, NoRegionError):
        return AwsError(operation, Category.UNSUPPORTED, NO_REGION)
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return AwsError(operation, Category.TIMEOUT, f"no answer in time: {exc}")
    if isinstance(exc, EndpointConnectionError):
        return AwsError(operation, Category.UNREACHABLE, f"cannot reach AWS: {exc}")
    return AwsError(operation, Category.UNREACHABLE, f"the call failed: {exc}")
