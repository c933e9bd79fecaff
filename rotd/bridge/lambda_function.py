"""The bridge's rotation function: what Secrets Manager invokes for each step of a rotation.

It holds no rotation logic. For each invocation it checks the request as AWS's rotation
template does, hands the step to rotd in one SQS message (:mod:`rotd.bridge.wire`) and waits
until the step's effect is visible in Secrets Manager, rotd reports the step failed in the
secret's failure tag, or its time runs out. Standard library and boto3 only: it runs in Lambda
from the archive :mod:`rotd.bridge.package` builds, without rotd's dependencies.

Settings come from the environment: ``ROTD_BRIDGE_QUEUE_URL`` (required), ``ROTD_BRIDGE_POLL_S``
(default 2), ``ROTD_BRIDGE_MARGIN_S`` (seconds kept before the function's own timeout, default
5) and ``ROTD_BRIDGE_STEP_TIMEOUT_S`` (an optional cap on one step's wait).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import boto3

from rotd.bridge import wire

_log = logging.getLogger("rotd.bridge")
# Lambda's runtime puts a handler on the root logger; our level must not hide INFO lines.
_log.setLevel(logging.INFO)


class Context(Protocol):
    """What the function uses of the context object Lambda passes."""

    @property
    def invoked_function_arn(self) -> str: ...

    def get_remaining_time_in_millis(self) -> int: ...


class SettingsError(ValueError):
    """The function's environment is wrong: it says which variable and why."""


class StepFailed(RuntimeError):
    """rotd reported the step failed, in the secret's failure tag."""

    def __init__(self, secret_id: str, failure: wire.Failure) -> None:
        self.secret_id = secret_id
        self.step = failure.step
        self.category = failure.category
        self.reason = failure.reason
        super().__init__(
            f"rotd failed {failure.step} for {secret_id}: {failure.reason} [{failure.category}]"
        )


@dataclass(frozen=True)
class Settings:
    queue_url: str
    poll_s: float = 2.0
    margin_s: float = 5.0
    step_timeout_s: float | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        queue_url = environ.get("ROTD_BRIDGE_QUEUE_URL", "").strip()
        if not queue_url:
            raise SettingsError(
                "ROTD_BRIDGE_QUEUE_URL is not set: set it in the function's environment to the "
                "URL of the SQS queue rotd's bridge consumes"
            )
        poll_s = _seconds(environ, "ROTD_BRIDGE_POLL_S")
        if poll_s == 0:
            raise SettingsError("ROTD_BRIDGE_POLL_S is 0: the function would never pause")
        margin_s = _seconds(environ, "ROTD_BRIDGE_MARGIN_S")
        return cls(
            queue_url=queue_url,
            poll_s=cls.poll_s if poll_s is None else poll_s,
            margin_s=cls.margin_s if margin_s is None else margin_s,
            step_timeout_s=_seconds(environ, "ROTD_BRIDGE_STEP_TIMEOUT_S"),
        )


def _seconds(environ: Mapping[str, str], name: str) -> float | None:
    """The variable ``name`` as a number of seconds; None when it is unset or blank."""
    text = environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{name} is {text!r}, not a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise SettingsError(f"{name} is {text!r}: it must be zero or more seconds")
    return value


def lambda_handler(event: Mapping[str, Any], context: Context) -> None:
    """Perform one step through rotd: return when it is done, raise when it is refused, failed
    or not done in time (Secrets Manager then retries the rotation)."""
    started = time.monotonic()
    secret_id = str(event.get("SecretId", ""))
    token = str(event.get("ClientRequestToken", ""))
    step = str(event.get("Step", ""))
    line: dict[str, Any] = {
        "event": "bridge.step",
        "secret": secret_id,
        "token": token,
        "step": step,
    }
    try:
        outcome = run_step(
            Settings.from_environ(),
            boto3.client("secretsmanager"),
            boto3.client("sqs"),
            secret_id,
            token,
            step,
            context,
        )
    except Exception as exc:
        # No error here carries a secret value: the function never holds one (it only asks
        # whether the pending value exists), and rotd's reason in the failure tag is scrubbed.
        line.update(outcome=_failed_outcome(exc), error_type=type(exc).__name__, error=str(exc))
        raise
    else:
        line["outcome"] = outcome
    finally:
        line["seconds"] = round(time.monotonic() - started, 3)
        _log.info(json.dumps(line, sort_keys=True))


def _failed_outcome(exc: Exception) -> str:
    if isinstance(exc, StepFailed):
        return "failed"
    if isinstance(exc, SettingsError):
        return "misconfigured"
    if isinstance(exc, TimeoutError):
        return "timed_out"
    if isinstance(exc, ValueError):
        return "refused"
    return "error"


def run_step(
    settings: Settings,
    secrets: Any,
    sqs: Any,
    secret_id: str,
    token: str,
    step: str,
    context: Context,
) -> str:
    """The step's outcome: ``already_current``, ``already_done`` or ``done``."""
    if step not in wire.STEPS:
        raise ValueError(f"unknown Step {step[:40]!r}: expected one of {', '.join(wire.STEPS)}")
    described = secrets.describe_secret(SecretId=secret_id)
    stages = _check_request(described, secret_id, token, context.invoked_function_arn)
    if "AWSCURRENT" in stages:
        return "already_current"
    if "AWSPENDING" not in stages:
        raise ValueError(
            f"version {token} of secret {secret_id} is not AWSPENDING: it is not being rotated to"
        )
    if _effect_visible(secrets, described, secret_id, token, step):
        return "already_done"

    # The deadline counts from before sending: the message may take time to leave.
    wait_s = context.get_remaining_time_in_millis() / 1000 - settings.margin_s
    if settings.step_timeout_s is not None:
        wait_s = min(wait_s, settings.step_timeout_s)
    deadline = time.monotonic() + wait_s
    request = uuid.uuid4().hex
    message = wire.Message(secret_id, token, step, request, context.invoked_function_arn)
    sqs.send_message(QueueUrl=settings.queue_url, MessageBody=wire.encode_message(message))
    while True:
        # rotd may be quick: the first look is right after sending.
        described = secrets.describe_secret(SecretId=secret_id)
        if _effect_visible(secrets, described, secret_id, token, step):
            return "done"
        failure = _failure(described)
        if failure is not None and failure.request == request:
            raise StepFailed(secret_id, failure)
        left_s = deadline - time.monotonic()
        if left_s <= 0:
            waited = f"{round(max(wait_s, 0), 1):g} s"
            raise TimeoutError(
                f"rotd did not complete {step} for {secret_id} within {waited}: "
                f"check that `rotd run` with the bridge configured is consuming "
                f"{settings.queue_url}, and look at rotd's logs and the secret's tag "
                f"{wire.FAILURE_TAG}"
            )
        time.sleep(min(settings.poll_s, left_s))


def _check_request(
    described: Mapping[str, Any], secret_id: str, token: str, function_arn: str
) -> list[str]:
    """The token's staging labels, once the request is one this function should serve."""
    if not described.get("RotationEnabled"):
        raise ValueError(f"secret {secret_id} is not enabled for rotation")
    configured = str(described.get("RotationLambdaARN") or "")
    if _unqualified(configured) != _unqualified(function_arn):
        raise ValueError(
            f"secret {secret_id} is rotated by {configured or 'no function'}, "
            f"not by this function ({function_arn})"
        )
    versions = described.get("VersionIdsToStages") or {}
    if token not in versions:
        raise ValueError(f"secret {secret_id} has no version {token} to rotate to")
    return list(versions[token] or ())


def _unqualified(function_arn: str) -> str:
    """A function's ARN without a version or alias (arn:aws:lambda:REGION:ACCOUNT:function:NAME)."""
    return ":".join(function_arn.split(":")[:7])


def _effect_visible(
    secrets: Any, described: Mapping[str, Any], secret_id: str, token: str, step: str
) -> bool:
    stages = (described.get("VersionIdsToStages") or {}).get(token) or ()
    if "AWSCURRENT" in stages:
        # The whole rotation is done (rotd's scan finishes a stranded one without the label
        # setSecret waits for): every step's effect is there.
        return True
    if step == "createSecret":
        try:
            secrets.get_secret_value(SecretId=secret_id, VersionId=token, VersionStage="AWSPENDING")
        except secrets.exceptions.ResourceNotFoundException:
            return False
        # The value itself is neither kept nor looked at: that it exists is the answer.
        return True
    if step == "finishSecret":
        return "AWSCURRENT" in stages
    return wire.TESTED in stages


def _failure(described: Mapping[str, Any]) -> wire.Failure | None:
    for tag in described.get("Tags") or ():
        if tag.get("Key") == wire.FAILURE_TAG:
            return wire.decode_failure(str(tag.get("Value", "")))
    return None
