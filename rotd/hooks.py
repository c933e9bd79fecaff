"""What runs after a rotation: a secret's ``on_rotated`` hooks, commands and webhooks.

After finishSecret has moved AWSCURRENT, :class:`HookRunner` runs the secret's hooks one after
the other, in the order the inventory lists them. An ``exec`` hook is a command started without
a shell, in a process group of its own, with the rotation's identifiers in its environment and,
only when asked, the new secret on its standard input; a ``webhook`` is a JSON POST, optionally
signed with HMAC-SHA256. Each hook has a deadline and a bounded number of retries with capped
exponential backoff. A hook that fails is logged and counted, and the next one still runs: the
rotation has happened and is never undone or repeated because of a hook. Hook output is
scrubbed of secret values before it is logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from rotd.commands import run_command
from rotd.errors import RotdError
from rotd.inventory import Hook, SecretSpec
from rotd.observability import get_logger, log_unexpected, redactor
from rotd.protocol import Outcome
from rotd.secretstore import SecretStore

log = get_logger("rotd.hooks")

SIGNATURE_HEADER = "X-Rotd-Signature"
TIMESTAMP_HEADER = "X-Rotd-Timestamp"

# Variables that carry rotd's own AWS credentials. They are not passed to exec hooks: rotd's
# identity may write every secret it rotates, and scripts tend to print their environment.
# Variables that only point at credentials (AWS_PROFILE, the container and web-identity
# settings) are kept, so that role-based set-ups work as for any other process.
STRIPPED_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
)

_RESPONSE_KEEP = 1024  # bytes of a webhook's response body put in a log event


@dataclass(frozen=True)
class HookResult:
    """How one hook ended: ``index`` is its 1-based position in the secret's ``on_rotated``."""

    index: int
    kind: str
    ok: bool
    attempts: int
    error: str | None = None


@dataclass(frozen=True)
class _Attempt:
    ok: bool
    retry: bool  # whether trying again may help
    error: str | None
    fields: Mapping[str, Any]  # exit code or status, output, for the log event


class HookRunner:
    """Runs the ``on_rotated`` hooks of rotated secrets; one per :class:`rotd.runner.Runner`.

    ``backoff_base_s`` and ``backoff_cap_s`` shape the wait between attempts of one hook:
    about base, 2*base, 4*base ... up to cap, with jitter.
    """

    def __init__(
        self,
        store: SecretStore,
        *,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 60.0,
    ) -> None:
        self.store = store
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        # Observers for metrics: called once per hook with (database, kind, result), where
        # result is "succeeded" or "failed" (Metrics.hook_finished fits); and with
        # (database, "hooks") for each unexpected exception caught (Metrics.unexpected_error).
        self.on_result: Callable[[str, str, str], None] | None = None
        self.on_fault: Callable[[str, str], None] | None = None

    async def run(self, spec: SecretSpec, outcome: Outcome) -> list[HookResult]:
        """Run every hook of ``spec`` for the successful rotation ``outcome``, in order.

        Never raises (except ``CancelledError``): each hook's failure is logged, counted and
        reported in the result; the hooks after it still run. Does nothing for a failed
        rotation, or one skipped because it was rotated elsewhere.
        """
        if not outcome.ok or outcome.skipped or not spec.hooks:
            return []
        rotation = _Rotation.of(spec, outcome)
        results = []
        for index, hook in enumerate(spec.hooks, start=1):
            results.append(await self._run_hook(rotation, index, hook))
        return results

    async def _run_hook(self, rotation: _Rotation, index: int, hook: Hook) -> HookResult:
        kind = "exec" if hook.argv is not None else "webhook"
        hook_log = log.bind(
            secret_id=rotation.secret_id,
            database=rotation.database,
            version_id=rotation.version_id,
            hook=index,
            kind=kind,
        )
        started = time.monotonic()
        attempts = 0
        try:
            hook_log = hook_log.bind(target=_target(hook))
            attempt = _Attempt(False, False, "not run", {})
            prepared = await self._prepare(hook)
            if isinstance(prepared, _Attempt):
                attempt = prepared
            else:
                while True:
                    attempts += 1
                    attempt = await self._attempt(rotation, hook, prepared)
                    if attempt.ok or not attempt.retry or attempts > hook.retries:
                        break
                    delay = self._delay(attempts)
                    hook_log.warning(
                        "hook.retry_scheduled",
                        attempt=attempts,
                        retry_in_s=round(delay, 3),
                        error=attempt.error,
                        **attempt.fields,
                    )
                    await asyncio.sleep(delay)
        except Exception as exc:  # a bug must not end the hooks of this secret, or the daemon
            log_unexpected(hook_log, "hooks", exc)
            if self.on_fault is not None:
                self.on_fault(rotation.database, "hooks")
            error = f"unexpected {type(exc).__name__}: {exc} (a fault in rotd)"
            hook_log.error("hook.failed", attempts=attempts, error=error)
            attempt = _Attempt(False, False, error, {})
        else:
            duration_s = round(time.monotonic() - started, 4)
            if attempt.ok:
                hook_log.info(
                    "hook.finished", attempts=attempts, duration_s=duration_s, **attempt.fields
                )
            else:
                hook_log.error(
                    "hook.failed",
                    attempts=attempts,
                    duration_s=duration_s,
                    error=attempt.error,
                    **attempt.fields,
                )
        result = "succeeded" if attempt.ok else "failed"
        if self.on_result is not None:
            self.on_result(rotation.database, kind, result)
        return HookResult(index, kind, attempt.ok, attempts, attempt.error)

    def _delay(self, failures: int) -> float:
        ceiling: float = min(self.backoff_cap_s, self.backoff_base_s * 2.0 ** (failures - 1))
        return ceiling * random.uniform(0.5, 1.0)

    async def _prepare(self, hook: Hook) -> bytes | _Attempt | None:
        """What every attempt needs and no retry can fix: a webhook's HMAC key."""
        if hook.hmac_key_file is None:
            return None
        try:
            key = await asyncio.to_thread(Path(hook.hmac_key_file).read_bytes)
        except OSError as exc:
            reason = f"cannot read hmac_key_file {hook.hmac_key_file}: {exc.strerror}"
            return _Attempt(False, False, reason, {})
        key = key.strip()
        if not key:
            return _Attempt(False, False, f"hmac_key_file {hook.hmac_key_file} is empty", {})
        redactor.add(key.decode("utf-8", "replace"))
        return key

    async def _attempt(self, rotation: _Rotation, hook: Hook, key: bytes | None) -> _Attempt:
        if hook.argv is not None:
            return await self._exec(rotation, hook, hook.argv)
        assert hook.url is not None
        return await _post(rotation, hook, hook.url, key)

    async def _exec(self, rotation: _Rotation, hook: Hook, argv: tuple[str, ...]) -> _Attempt:
        stdin: bytes | None = None
        if hook.include_secret:
            try:
                value = await self.store.get_value(
                    rotation.secret_id, version_id=rotation.version_id
                )
            except RotdError as exc:
                return _Attempt(False, True, f"cannot read the new secret: {exc}", {})
            _register_password(value.string)
            stdin = value.string.encode()
        return await _run_command(argv, exec_env(rotation.variables()), stdin, _seconds(hook))


@dataclass(frozen=True)
class _Rotation:
    """The identifiers of a finished rotation that hooks receive."""

    secret_id: str
    secret_arn: str
    version_id: str
    username: str
    database: str
    rotated_at: str

    @classmethod
    def of(cls, spec: SecretSpec, outcome: Outcome) -> _Rotation:
        return cls(
            secret_id=spec.id,
            secret_arn=outcome.arn or "",
            version_id=outcome.version_id or "",
            username=outcome.new_username or "",
            database=spec.database,
            rotated_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        )

    def payload(self) -> dict[str, str]:
        return {
            "secret_id": self.secret_id,
            "secret_arn": self.secret_arn,
            "version_id": self.version_id,
            "username": self.username,
            "database": self.database,
            "rotated_at": self.rotated_at,
        }

    def variables(self) -> dict[str, str]:
        return {f"ROTD_{key.upper()}": value for key, value in self.payload().items()}


def exec_env(variables: Mapping[str, str]) -> dict[str, str]:
    """An exec hook's environment: rotd's, without its AWS credentials, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if k not in STRIPPED_ENV}
    env.update(variables)
    return env


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Rotd-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of
    ``timestamp + "." + body`` under ``key``."""
    digest = hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _seconds(hook: Hook) -> float:
    # Never 0: aiohttp reads a zero timeout as none at all.
    return max(hook.timeout.total_seconds(), 0.001)


def _target(hook: Hook) -> str:
    """What to call a hook in logs. A webhook's path and query often hold a token (Slack's
    do), so only its scheme, host and port are named."""
    if hook.argv is not None:
        return " ".join(hook.argv)
    parts = urlsplit(hook.url or "")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


def _register_password(text: str) -> None:
    """Make sure the password handed to a hook is masked if the hook prints it."""
    try:
        document = json.loads(text)
    except ValueError:
        redactor.add(text)
        return
    if isinstance(document, dict) and isinstance(document.get("password"), str):
        redactor.add(document["password"])


# --- exec ---------------------------------------------------------------------------------------


async def _run_command(
    argv: tuple[str, ...] | list[str],
    env: Mapping[str, str],
    stdin: bytes | None,
    timeout_s: float,
) -> _Attempt:
    """Run ``argv`` once (:func:`rotd.commands.run_command`) as one attempt of a hook."""
    ran = await run_command(argv, env, stdin, timeout_s)
    if ran.error is not None:
        return _Attempt(False, False, ran.error, {})
    fields: dict[str, Any] = {
        "exit_code": ran.exit_code,
        "attempt_s": ran.duration_s,
        "stdout": ran.stdout,
        "stderr": ran.stderr,
    }
    if ran.timed_out:
        return _Attempt(False, True, f"timed out after {timeout_s:g}s; killed", fields)
    if ran.exit_code != 0:
        return _Attempt(False, True, f"exited with {ran.exit_text}", fields)
    return _Attempt(True, False, None, fields)


# --- webhook ------------------------------------------------------------------------------------


async def _post(rotation: _Rotation, hook: Hook, url: str, key: bytes | None) -> _Attempt:
    body = json.dumps(rotation.payload(), separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "rotd"}
    if key is not None:
        # Signed per attempt, so that a retry carries a fresh timestamp.
        timestamp = str(int(time.time()))
        headers[TIMESTAMP_HEADER] = timestamp
        headers[SIGNATURE_HEADER] = sign(key, timestamp, body)
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=_seconds(hook))
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, trust_env=True) as session,
            session.post(url, data=body, headers=headers, allow_redirects=False) as response,
        ):
            status = response.status
            answer = await response.content.read(_RESPONSE_KEEP)
    except TimeoutError:
        return _Attempt(False, True, f"no answer within {_seconds(hook):g}s", {})
    except aiohttp.ClientError as exc:
        # Messages may quote the URL, whose path may hold a token.
        reason = redactor.scrub(str(exc).replace(url, _target(hook)))
        return _Attempt(False, True, f"request failed: {type(exc).__name__}: {reason}", {})
    fields = {
        "status": status,
        "attempt_s": round(time.monotonic() - started, 4),
        "response": redactor.scrub(answer.decode("utf-8", "replace")),
    }
    if 200 <= status < 300:
        return _Attempt(True, False, None, fields)
    # A server error, a timeout or a rate limit may pass; other answers will not change.
    retry = status >= 500 or status in (408, 429)
    return _Attempt(False, retry, f"answered HTTP {status}", fields)
