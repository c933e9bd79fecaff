"""IAM roles rotd assumes through STS to reach secrets in other accounts.

A database's ``aws.role_arn`` names a role; rotd assumes it with its own (base) credentials and
gives the clients of that database's account and region an aiobotocore session whose
credentials refresh themselves: :data:`REFRESH_MARGIN_S` before they expire, the next call
assumes the role again, for as long as the process runs. A refusal of AssumeRole becomes an
:class:`rotd.errors.AwsError` that names the role and what its trust policy must allow.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aioboto3
import structlog
from aiobotocore.credentials import AioDeferredRefreshableCredentials
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError

from rotd.errors import AwsError, Category
from rotd.observability import redactor

log = structlog.get_logger("rotd.roles")

# How long each assumed session lasts (AWS allows 900 s up to the role's maximum, 1 h by
# default) and how long before its end rotd assumes the role again. Tests shorten the margin
# to watch a refresh happen.
DURATION_S = 3600
REFRESH_MARGIN_S = 600.0
DEFAULT_SESSION_NAME = "rotd"

OpenSts = Callable[[], AbstractAsyncContextManager[Any]]


class _RoleCredentials(AioDeferredRefreshableCredentials):  # type: ignore[misc]
    """Credentials fetched on first use and again once they are within the margin of expiry."""

    def __init__(self, refresh_using: Callable[[], Any], margin_s: float) -> None:
        super().__init__(refresh_using=refresh_using, method="assume-role")
        # botocore refreshes when fewer than these seconds are left (advisory: try, keep the
        # old credentials on failure; mandatory: must succeed).
        self._advisory_refresh_timeout = margin_s
        self._mandatory_refresh_timeout = margin_s / 2


def assumed_session(
    role_arn: str,
    region: str | None,
    open_sts: OpenSts,
    *,
    external_id: str | None = None,
    session_name: str | None = None,
) -> aioboto3.Session:
    """An aioboto3 session acting as ``role_arn``; ``open_sts`` opens an STS client with the
    base credentials each time the role is assumed (about once per session duration)."""
    if external_id is not None:
        redactor.add(external_id)
    request: dict[str, Any] = {
        "RoleArn": role_arn,
        "RoleSessionName": session_name or DEFAULT_SESSION_NAME,
        "DurationSeconds": DURATION_S,
    }
    if external_id is not None:
        request["ExternalId"] = external_id

    async def assume() -> dict[str, Any]:
        try:
            async with open_sts() as sts:
                r = await sts.assume_role(**request)
        except (BotoCoreError, ClientError) as exc:
            raise refused(role_arn, exc) from None
        credentials = r["Credentials"]
        redactor.add(credentials["SecretAccessKey"])
        redactor.add(credentials["SessionToken"])
        expiry = credentials["Expiration"]
        log.info("aws.credentials_refreshed", role_arn=role_arn, expires=expiry.isoformat())
        return {
            "access_key": credentials["AccessKeyId"],
            "secret_key": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
            "expiry_time": expiry.isoformat(),
        }

    botocore_session = AioSession()
    # botocore has no public setter for refreshable credentials; its own assume-role
    # provider installs them the same way.
    botocore_session._credentials = _RoleCredentials(assume, REFRESH_MARGIN_S)
    return aioboto3.Session(botocore_session=botocore_session, region_name=region)


def refused(role_arn: str, exc: Exception) -> AwsError:
    """What to do when rotd cannot assume ``role_arn``."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = redactor.scrub(str(error.get("Message", "")).strip())
        if code in ("AccessDenied", "AccessDeniedException", "InvalidClientTokenId"):
            return AwsError(
                "sts:AssumeRole",
                Category.PERMISSION,
                f"cannot assume {role_arn} ({code}): the role's trust policy must allow "
                "sts:AssumeRole by rotd's own identity (see `rotd iam-policy`), and that "
                f"identity needs sts:AssumeRole on the role; AWS said: {message}",
            )
        return AwsError(
            "sts:AssumeRole",
            Category.SERVER if code.startswith("Internal") else Category.PERMISSION,
            f"cannot assume {role_arn} ({code}): {message}",
        )
    return AwsError("sts:AssumeRole", Category.UNREACHABLE, f"cannot reach STS: {exc}")
