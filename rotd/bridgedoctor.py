"""``rotd doctor``'s checks of the bridge: each bridge queue and function the checked secrets
use, and each secret's rotation settings in Secrets Manager against its ``rotation:``.

The queue must exist and be readable as the identity that reads it (GetQueueAttributes; its
visibility timeout does not matter, rotd sets one on every receive); a short message
retention or a FIFO queue is warned about. The function's configuration (Lambda
GetFunctionConfiguration) must name rotd's handler and the inventory's queue, with a timeout
long enough to wait for rotd. A bridged secret's rotation must be enabled with its bridge
function; a ``rotation: daemon`` secret whose rotation is enabled with a bridge function is
told to say ``rotation: bridge``. The calls translate botocore's errors here; nothing is
written, no message is sent or received, the function is not invoked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from rotd.bridge.package import HANDLER
from rotd.errors import AwsError, Category
from rotd.inventory import AwsAccess, Bridge, SecretSpec, every_service_endpoint
from rotd.protocol import bridge_conflict, enable_bridge_command, same_function
from rotd.secretstore import AwsConnection, SecretDescription, aws_error, open_client

QUEUE_ENV = "ROTD_BRIDGE_QUEUE_URL"
# The function waits for rotd within its own timeout: below this, a step that takes a
# database's login timeout or a replica's catching up fails before rotd is done.
MIN_TIMEOUT_S = 60
# A message older than this is gone before a daemon that was down a while reads it (the scan
# still finishes the rotation, later).
MIN_RETENTION_S = 3600
# rotd reads and deletes messages; the one that sends them (the function) needs nothing else.
QUEUE_ACTIONS = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility")
# What rotd calls on a bridged secret beyond a rotation's reads and writes.
SECRET_ACTIONS = (
    "secretsmanager:RotateSecret",
    "secretsmanager:TagResource",
    "secretsmanager:UntagResource",
)


class Found(Protocol):
    """Where the findings go (doctor's per-subject list of checks)."""

    def ok(self, name: str, detail: str) -> None: ...
    def warn(self, name: str, detail: str, fix: str | None = None) -> None: ...
    def fail(self, name: str, detail: str, fix: str | None = None) -> None: ...


@dataclass(frozen=True)
class FunctionConfig:
    """What rotd checks of a function's configuration."""

    arn: str
    handler: str | None
    queue_url: str | None  # its ROTD_BRIDGE_QUEUE_URL
    timeout_s: int | None
    role: str | None
    code_sha256: str | None  # of its deployed archive, to compare with a packaged one's


def bridges_of(specs: Iterable[SecretSpec]) -> dict[Bridge, AwsAccess]:
    """Each bridge the bridged ``specs`` use, and the identity its queue is read as (that of
    its first secret, as ``rotd run`` reads it)."""
    found: dict[Bridge, AwsAccess] = {}
    for spec in specs:
        if spec.bridge is not None:
            found.setdefault(spec.bridge, spec.aws)
    return found


def queue_connection(connection: AwsConnection, bridge: Bridge, access: AwsAccess) -> AwsConnection:
    """How rotd reaches the queue of ``bridge``: as ``access``, in the queue's region."""
    connection = connection.to(access)
    return replace(
        connection,
        region=bridge.queue_region or connection.region,
        endpoint_url=every_service_endpoint(access.endpoint_url),
    )


def function_connection(
    connection: AwsConnection, bridge: Bridge, access: AwsAccess
) -> AwsConnection:
    """How rotd reaches the function of ``bridge``: as ``access``, in the function's region."""
    connection = connection.to(access)
    return replace(
        connection,
        region=bridge.region or connection.region,
        endpoint_url=every_service_endpoint(access.endpoint_url),
    )


# --- the I/O edge: SQS and Lambda ---------------------------------------------------------------


async def queue_attributes(connection: AwsConnection, url: str) -> dict[str, str]:
    """The queue's attributes; :class:`AwsError` (NOT_FOUND for a queue that does not exist)."""
    operation = f"sqs:GetQueueAttributes on {url}"
    try:
        async with open_client("sqs", connection, retry_mode="standard") as client:
            r = await client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if "NonExistentQueue" in code or code == "QueueDoesNotExist":
            raise AwsError(operation, Category.NOT_FOUND, "SQS has no such queue") from None
        raise _refused(exc, operation) from None
    except (BotoCoreError, ResponseParserError) as exc:
        raise aws_error(exc, operation) from None
    return {str(k): str(v) for k, v in (r.get("Attributes") or {}).items()}


async def function_configuration(connection: AwsConnection, arn: str) -> FunctionConfig:
    """The function's configuration; :class:`AwsError` (NOT_FOUND when there is none)."""
    operation = f"lambda:GetFunctionConfiguration on {arn}"
    try:
        async with open_client("lambda", connection, retry_mode="standard") as client:
            r: dict[str, Any] = await client.get_function_configuration(FunctionName=arn)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code == "ResourceNotFoundException":
            raise AwsError(operation, Category.NOT_FOUND, "Lambda has no such function") from None
        raise _refused(exc, operation) from None
    except (BotoCoreError, ResponseParserError) as exc:
        raise aws_error(exc, operation) from None
    variables = (r.get("Environment") or {}).get("Variables") or {}
    timeout = r.get("Timeout")
    return FunctionConfig(
        arn=str(r.get("FunctionArn") or arn),
        handler=r.get("Handler"),
        queue_url=variables.get(QUEUE_ENV),
        timeout_s=int(timeout) if timeout is not None else None,
        role=r.get("Role"),
        code_sha256=r.get("CodeSha256"),
    )


def _refused(exc: ClientError, operation: str) -> AwsError:
    """:func:`aws_error`, and an HTTP 403 whose error botocore could not read (an emulator's
    XML where JSON was expected) as the refusal it is."""
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    # botocore then names the error by the status code itself.
    if status == 403 and str(exc.response.get("Error", {}).get("Code") or "403") == "403":
        return AwsError(operation, Category.PERMISSION, "access denied (HTTP 403)")
    return aws_error(exc, operation)


# --- the checks ---------------------------------------------------------------------------------


async def check_queue(connection: AwsConnection, bridge: Bridge, found: Found) -> str | None:
    """Whether rotd can read the bridge's queue; its ARN when it can."""
    name, url = "bridge.queue", bridge.queue_url
    try:
        attributes = await queue_attributes(connection, url)
    except AwsError as exc:
        if exc.category is Category.NOT_FOUND:
            found.fail(
                name,
                f"{url}: {exc.reason}",
                "create the queue (aws sqs create-queue --queue-name "
                f"{url.rsplit('/', 1)[-1]}) or correct bridge.queue_url; until then no "
                "bridged rotation reaches rotd",
            )
        elif exc.category is Category.PERMISSION:
            found.fail(
                name,
                f"{url}: {exc.reason}",
                "allow sqs:GetQueueAttributes, sqs:ReceiveMessage, sqs:DeleteMessage and "
                "sqs:ChangeMessageVisibility on the queue for rotd (rotd iam-policy prints them)",
            )
        else:
            found.fail(name, f"{url}: {exc.reason}", "SQS must be reachable from this host")
        return None
    arn = attributes.get("QueueArn")
    retention = int(attributes.get("MessageRetentionPeriod") or MIN_RETENTION_S)
    problems: list[str] = []
    if attributes.get("FifoQueue") == "true" or url.endswith(".fifo"):
        problems.append(
            "it is a FIFO queue: the function sends to a standard queue (no MessageGroupId), "
            "so its messages are refused"
        )
    if retention < MIN_RETENTION_S:
        problems.append(
            f"it keeps messages {retention} s only: a step sent while rotd is down longer is "
            "lost (the scan finishes the rotation later)"
        )
    if problems:
        found.warn(
            name,
            f"{url} ({arn}): " + "; ".join(problems),
            "use a standard queue that keeps messages at least an hour "
            "(MessageRetentionPeriod >= 3600)",
        )
    else:
        found.ok(name, f"{url} ({arn}) is readable; messages kept {retention} s")
    return arn


async def check_function(
    connection: AwsConnection, bridge: Bridge, found: Found, code_sha256: str | None = None
) -> None:
    """Whether the bridge function is rotd's, sending to the inventory's queue; with
    ``code_sha256`` (this rotd's archive's), whether it runs this rotd's code."""
    name, arn = "bridge.function", bridge.function_arn
    try:
        config = await function_configuration(connection, arn)
    except AwsError as exc:
        if exc.category is Category.NOT_FOUND:
            found.fail(
                name,
                f"{arn}: {exc.reason}",
                "deploy the bridge function (docs/bridge.md) or correct bridge.function_arn",
            )
        elif exc.category is Category.PERMISSION:
            found.warn(
                name,
                f"not checked: {exc.reason}",
                f"allow lambda:GetFunctionConfiguration on {arn} to let rotd doctor check it",
            )
        else:
            found.fail(name, f"{arn}: {exc.reason}", "Lambda must be reachable from this host")
        return
    failed = False
    if config.handler != HANDLER:
        failed = True
        found.fail(
            name,
            f"{arn}: its handler is {config.handler!r}, not rotd's bridge",
            f"set the function's handler to {HANDLER} (aws lambda "
            f"update-function-configuration --function-name {arn} --handler {HANDLER})",
        )
    if config.queue_url != bridge.queue_url:
        failed = True
        now = repr(config.queue_url) if config.queue_url else "not set"
        found.fail(
            name,
            f"{arn}: its {QUEUE_ENV} is {now}, but the inventory's bridge.queue_url is "
            f"{bridge.queue_url}: its steps would not reach rotd",
            f"set {QUEUE_ENV}={bridge.queue_url} in the function's environment, or correct "
            "bridge.queue_url",
        )
    if failed:
        return
    warned = False
    if code_sha256 is not None and config.code_sha256 != code_sha256:
        warned = True
        found.warn(
            name,
            f"{arn}: its code (CodeSha256 {config.code_sha256}) is not this rotd's bridge "
            f"function ({code_sha256}): another release's, or changed by hand",
            "build this rotd's archive (rotd bridge package -o bridge.zip) and deploy it: aws "
            f"lambda update-function-code --function-name {arn} --zip-file fileb://bridge.zip",
        )
    if config.timeout_s is not None and config.timeout_s < MIN_TIMEOUT_S:
        warned = True
        found.warn(
            name,
            f"{arn}: its timeout is {config.timeout_s} s: a step that takes rotd longer "
            "(a slow login, a replica catching up) fails and Secrets Manager retries it",
            f"raise the function's timeout to at least {MIN_TIMEOUT_S} s",
        )
    if warned:
        return
    found.ok(
        name,
        f"{arn}: handler {HANDLER}, sends to {bridge.queue_url}, timeout {config.timeout_s} s",
    )


def check_rotation(
    spec: SecretSpec,
    description: SecretDescription,
    bridge_functions: Iterable[str],
    found: Found,
) -> bool:
    """A secret's rotation settings in Secrets Manager against its ``rotation:``; False when
    they are not the bridge's business (a daemon secret not rotated by a bridge function)."""
    if spec.bridge is not None:
        if bridge_conflict(spec, description) is None:
            found.ok(
                "bridge.rotation",
                f"Secrets Manager rotates it with {description.rotation_lambda}"
                + (
                    f", next {description.next_rotation.isoformat(timespec='seconds')}"
                    if description.next_rotation
                    else ""
                ),
            )
            return True
        now = (
            f"its rotation function is {description.rotation_lambda}"
            if description.rotation_enabled and description.rotation_lambda
            else "its rotation is not enabled in Secrets Manager"
        )
        found.fail(
            "bridge.rotation",
            f"the inventory says rotation: bridge, but {now}: Secrets Manager never asks "
            "rotd to rotate it",
            enable_bridge_command(spec),
        )
        return True
    if not description.rotation_enabled:
        return False
    function = next(
        (f for f in bridge_functions if same_function(description.rotation_lambda, f)), None
    )
    if function is None:
        return False
    found.fail(
        "secret.native_rotation",
        f"Secrets Manager rotates it with the bridge function {function}, but the inventory "
        "says rotation: daemon: rotd drops the function's steps and its own rotations refuse",
        "set rotation: bridge on this secret in the inventory (or turn Secrets Manager's "
        f"rotation off: aws secretsmanager cancel-rotate-secret --secret-id {spec.id})",
    )
    return True
