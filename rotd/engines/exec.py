"""The exec engine: logins on any system the operator's commands can reach.

For a system no other engine knows (a message broker, a directory, an appliance's API), the
inventory's ``exec:`` block names commands and rotd supplies the rest: schedule, protocol,
resume, hooks, metrics, doctor. Each command receives one JSON object on standard input and
nothing secret in its argv or environment; it runs without a shell, in a process group of its
own, with a deadline. Exit 0 is done; 75 (EX_TEMPFAIL) a passing trouble, retried; 77
(EX_NOPERM) a refused login (``test_login``) or a permission problem (the others); any other
exit fails for good, quoting the command's last stderr lines with every secret value masked.
A timeout kills the command's process group and is retried. Every run is logged as
``exec.finished`` with its output bounded and scrubbed.

A session is no connection: it is the login it was opened as (whose ``test_login`` passed),
the login that acts in ``set_password`` and ``mirror_user``. There is no session lock: the
version id fences two rotd processes (README: Concurrency), and ``doctor`` warns to run one.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from rotd.commands import run_command
from rotd.engines import (
    Capabilities,
    EngineInfo,
    Login,
    Permission,
    Session,
    rotation,
)
from rotd.errors import Category, DatabaseError
from rotd.observability import get_logger, redactor
from rotd.passwords import PasswordPolicy

log = get_logger("rotd.exec")

EX_TEMPFAIL = 75  # sysexits.h: a passing trouble, try again later
EX_NOPERM = 77  # sysexits.h: permission denied

# What a command's environment holds: these of rotd's own, and nothing else. No AWS
# credentials, no secret: a command gets what it needs on standard input.
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

ERROR_LINES = 5  # stderr lines quoted in an error

INFO = EngineInfo(
    # mirror_user only where the database configures its command: see capabilities_for.
    Capabilities(single_user=True),
    default_port=0,  # nothing is dialled: host and port only name the system in logs
    secret_keys=None,  # a secret holds whatever its system needs (a vhost, a tenant)
)


class ExecEngine:
    """The ``exec`` entry point: its settings come with each login's endpoint."""

    info = INFO

    def capabilities_for(self, settings: Mapping[str, Any]) -> Capabilities:
        return Capabilities(single_user=True, mirror_user=bool(settings.get("mirror_user")))

    def connect(self, login: Login, *, timeout_s: float) -> AbstractAsyncContextManager[Session]:
        # Each command runs under the database's exec timeout, not the connection deadline:
        # a command may need longer than a login does (an appliance's slow API).
        return self._connect(login)

    @asynccontextmanager
    async def _connect(self, login: Login) -> AsyncIterator[Session]:
        session = ExecSession(login)
        # Opening a session is logging in: the login must work, or first_login moves on.
        await session.run_test(None)
        yield session


class ExecSession:
    """A login whose ``test_login`` passed, acting through the configured commands."""

    def __init__(self, login: Login) -> None:
        self.login = login
        self.settings = login.endpoint.settings
        if not self.settings.get("set_password") or not self.settings.get("test_login"):
            raise self._error(
                Category.UNSUPPORTED,
                "engine exec needs the database's exec: block in the inventory "
                "(engine: exec, exec: {set_password: [...], test_login: [...]})",
            )

    @property
    def username(self) -> str:
        return self.login.username

    @property
    def document(self) -> dict[str, Any]:
        """The acting login's whole secret JSON, its login as this session holds it."""
        return {
            **self.login.document,
            "username": self.login.username,
            "password": self.login.password,
        }

    async def close(self) -> None:
        pass

    async def check_username(self, name: str) -> None:
        pass  # the system's own limit: set_password or mirror_user says so

    async def set_own_password(self, new_password: str) -> None:
        await self._set(self.username, new_password)

    async def set_password(self, username: str, new_password: str) -> None:
        await self._set(username, new_password)

    async def _set(self, username: str, new_password: str) -> None:
        context = rotation.get()
        pending = context.pending if context is not None else None
        payload = {
            "secret_id": context.secret_id if context else None,
            "strategy": context.strategy if context else None,
            "acting": self.document,
            "username": username,
            "password": new_password,
            "pending": dict(pending) if pending is not None else None,
        }
        await self._run("set_password", payload)

    async def mirror_user(self, original: str, clone: str, new_password: str) -> None:
        if not self.settings.get("mirror_user"):
            raise self._error(
                Category.UNSUPPORTED,
                "strategy alternating_users needs exec: mirror_user: [argv...] in the inventory",
            )
        context = rotation.get()
        payload = {
            "secret_id": context.secret_id if context else None,
            "acting": self.document,
            "original": original,
            "clone": clone,
            "password": new_password,
        }
        await self._run("mirror_user", payload)

    async def run_test(self, query: str | None) -> None:
        context = rotation.get()
        payload = {
            "secret_id": context.secret_id if context else None,
            "login": self.document,
        }
        await self._run("test_login", payload)

    async def try_lock(self, key: str) -> bool:
        return True  # no lock: the version id is the fence (module docstring)

    async def unlock(self, key: str) -> None:
        pass

    async def ping(self) -> None:
        pass  # nothing stays open between commands

    async def tls_in_use(self) -> bool:
        return False  # rotd does not connect; the commands choose their own transport

    async def may_set_own_password(self) -> Permission:
        return _UNKNOWN

    async def may_set_password(self, username: str) -> Permission:
        return _UNKNOWN

    async def may_mirror_user(self, original: str, clone: str) -> Permission:
        return _UNKNOWN

    async def accepts_passwords(self, policy: PasswordPolicy) -> Permission:
        return _UNKNOWN

    def _error(self, category: Category, reason: str) -> DatabaseError:
        endpoint = self.login.endpoint
        return DatabaseError(endpoint.host, endpoint.port, category, reason)

    async def _run(self, command: str, payload: Mapping[str, Any]) -> None:
        """Run the configured ``command`` with ``payload`` on standard input; raise
        DatabaseError unless it exits 0."""
        argv: Sequence[str] = self.settings[command]
        timeout_s = float(self.settings.get("timeout_s") or 30.0)
        _register(payload)
        data = json.dumps(payload, ensure_ascii=False).encode()
        context = rotation.get()
        event = log.bind(
            command=command,
            program=argv[0],
            secret_id=context.secret_id if context else None,
            username=self.username,
        )
        ran = await run_command(argv, command_env(), data, timeout_s)
        fields = {"duration_s": ran.duration_s, "stdout": ran.stdout, "stderr": ran.stderr}
        if ran.error is not None:
            event.error("exec.failed", error=ran.error, **fields)
            raise self._error(Category.UNSUPPORTED, f"exec {command}: {ran.error}")
        if ran.timed_out:
            event.warning("exec.finished", timed_out=True, **fields)
            raise self._error(
                Category.TIMEOUT,
                f"exec {command} ({argv[0]}) did not finish within {timeout_s:g}s; "
                "its process group was killed",
            )
        event.info("exec.finished", exit_code=ran.exit_code, **fields)
        if ran.exit_code == 0:
            return
        said = f"exec {command} ({argv[0]}) exited with {ran.exit_text}"
        last = _last_lines(ran.stderr)
        if last:
            said += f": {last}"
        if ran.exit_code == EX_TEMPFAIL:
            raise self._error(Category.SERVER, f"{said} (a passing trouble: retried)")
        if ran.exit_code == EX_NOPERM:
            if command == "test_login":
                raise self._error(Category.AUTH, f"{said} (the login is refused)")
            raise self._error(Category.PERMISSION, f"{said} (a permission problem)")
        raise self._error(Category.COMMAND_FAILED, said)


_UNKNOWN = Permission(False, "engine exec cannot tell without running its commands")


def _register(payload: Any) -> None:
    """Register every password in ``payload`` (and the documents in it) with the redactor."""
    if isinstance(payload, Mapping):
        for key, value in payload.items():
            if key == "password" and isinstance(value, str):
                redactor.add(value)
            else:
                _register(value)


def command_env() -> dict[str, str]:
    """A command's environment: :data:`PASSED_ENV` from rotd's own, PATH always."""
    env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
    env.setdefault("PATH", DEFAULT_PATH)
    return env


def _last_lines(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return " | ".join(lines[-ERROR_LINES:])[-1000:]
