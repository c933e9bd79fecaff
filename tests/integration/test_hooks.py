"""``on_rotated`` hooks: real commands, a real local HTTP server, real rotations on moto."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from rotd.commands import OUTPUT_KEEP
from rotd.engines import all_engines
from rotd.hooks import HookRunner
from rotd.inventory import Hook, Inventory, SecretSpec, Strategy
from rotd.observability import Metrics, redactor
from rotd.protocol import Outcome
from rotd.runner import Runner
from rotd.testing.kit import processed_events
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.databases import Database
from tests.fixtures.deadlines import until
from tests.fixtures.rotation import Rotd, assert_ok, inventory, make_login

PY = sys.executable
# Writes its environment, arguments and standard input as JSON to the file named first.
RECORD = (
    "import json, os, sys\n"
    "data = {'env': dict(os.environ), 'argv': sys.argv[1:], 'stdin': sys.stdin.read()}\n"
    "open(sys.argv[1], 'w').write(json.dumps(data))\n"
)
# Appends its second argument as a line to the file named first.
APPEND = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')"
# Counts its runs in the file named first, complains, and fails.
FAIL = (
    "import sys\n"
    "open(sys.argv[1], 'a').write('run\\n')\n"
    "print('reloading app', flush=True)\n"
    "sys.exit('the app refused to reload')\n"
)
# Starts a child in its process group, records both pids, then hangs.
HANG = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "open(sys.argv[1], 'w').write(f'{child.pid} {__import__(\"os\").getpid()}')\n"
    "time.sleep(60)\n"
)
ECHO_STDIN = "import sys; sys.stdout.write('got ' + sys.stdin.read())"
SPEW = "import sys; sys.stdout.write('x' * 200_000 + 'the end')"

Event = dict[str, Any]


@pytest.fixture
def events() -> Iterator[list[Event]]:
    """Every log event rotd emits, after its real processor chain (redaction included)."""
    captured: list[Event] = []
    with processed_events(lambda _logger, _name, event: captured.append(event)):
        yield captured


def named(events: list[Event], name: str) -> list[Event]:
    return [e for e in events if e["event"] == name]


class Receiver:
    """A real HTTP server on 127.0.0.1 that records webhook requests and answers as told."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int | str] = []  # an HTTP status, or "hang"; 200 when empty
        self.release = asyncio.Event()
        self.on_request: Any = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        if self.on_request is not None:
            self.on_request()
        answer = self.answers.pop(0) if self.answers else 200
        if answer == "hang":
            await self.release.wait()
            answer = 200
        assert isinstance(answer, int)
        return web.Response(status=answer, text=f"answer {answer}")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    app = web.Application()
    app.router.add_post("/hooks/{token}", server.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    # The token in the path stands for a secret, as in Slack's webhook URLs.
    server.url = f"http://127.0.0.1:{port}/hooks/tok-9f8e7d6c5b4a"
    try:
        yield server
    finally:
        server.release.set()
        await runner.cleanup()


def with_hooks(
    moto: MotoServer, secret: str, hooks: list[dict[str, Any]], *, level: str = "secret"
) -> Inventory:
    """A one-secret inventory whose ``on_rotated`` stands at ``level`` (defaults, database,
    secret). JSON is YAML: each top-level key's value is written as JSON."""
    secret_entry: dict[str, Any] = {"id": secret, "strategy": "single_user"}
    database: dict[str, Any] = {"name": "testdb", "secrets": [secret_entry]}
    body: dict[str, Any] = {"defaults": {}, "databases": [database]}
    {"defaults": body["defaults"], "database": database, "secret": secret_entry}[level][
        "on_rotated"
    ] = hooks
    return inventory(moto, "".join(f"{key}: {json.dumps(value)}\n" for key, value in body.items()))


def exec_hook(*argv: str, timeout_s: float = 30, retries: int = 0, **kw: Any) -> Hook:
    return Hook(
        argv=argv,
        url=None,
        timeout=timedelta(seconds=timeout_s),
        retries=retries,
        include_secret=kw.get("include_secret", False),
        hmac_key_file=None,
    )


def webhook(url: str, *, timeout_s: float = 30, retries: int = 0, key: Path | None = None) -> Hook:
    return Hook(
        argv=None,
        url=url,
        timeout=timedelta(seconds=timeout_s),
        retries=retries,
        include_secret=False,
        hmac_key_file=str(key) if key else None,
    )


@pytest.fixture
def spec(moto: MotoServer) -> SecretSpec:
    (base,) = with_hooks(moto, "rotd-test/hooks", []).secrets
    return base


def rotated(spec: SecretSpec, version_id: str = "v-1234", arn: str | None = None) -> Outcome:
    """The outcome of a successful rotation of ``spec``, as the protocol reports one."""
    return Outcome(
        secret_id=spec.id,
        database=spec.database,
        strategy=Strategy.SINGLE_USER,
        duration_s=0.5,
        arn=arn or f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{spec.id}-AbCdEf",
        engine="postgres",
        old_username="app",
        new_username="app",
        version_id=version_id,
    )


def fast_runner(rotd: Rotd) -> Runner:
    runner = Runner(rotd.store, all_engines(), max_concurrent=4, max_concurrent_per_host=4)
    runner.hooks = HookRunner(rotd.store, backoff_base_s=0.01, backoff_cap_s=0.05)
    return runner


def gone(pid: int) -> bool:
    """The process has exited: no longer in /proc, or a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


# --- through a real rotation --------------------------------------------------------------------


@pytest.mark.parametrize("db", ["postgres"], indirect=True)  # hooks do not depend on the engine
async def test_exec_hooks_after_a_rotation_get_its_ids_and_only_when_asked_the_secret(
    db: Database,
    secrets: Secrets,
    rotd: Rotd,
    moto: MotoServer,
    tmp_path: Path,
    events: list[Event],
) -> None:
    user, name = await make_login(db, secrets)
    plain, with_secret = tmp_path / "plain.json", tmp_path / "with_secret.json"
    hooks = [
        {"exec": [PY, "-c", RECORD, str(plain)]},
        {"exec": [PY, "-c", RECORD, str(with_secret)], "include_secret": True, "timeout": "10s"},
    ]
    inv = with_hooks(moto, name, hooks, level="database")  # layered down to the secret

    outcome = await rotd.rotate_one(inv)

    assert_ok(outcome)
    current = await secrets.value(name)
    first, second = json.loads(plain.read_text()), json.loads(with_secret.read_text())
    for seen in (first, second):
        env = seen["env"]
        assert env["ROTD_SECRET_ID"] == name
        assert env["ROTD_SECRET_ARN"] == outcome.arn
        assert env["ROTD_VERSION_ID"] == outcome.version_id == await secrets.version(name)
        assert env["ROTD_USERNAME"] == user
        assert env["ROTD_DATABASE"] == "testdb"
        assert env["ROTD_ROTATED_AT"].endswith("Z")
        assert not any(current["password"] in value for value in env.values())
        # rotd's own AWS credentials are not handed on; the rest of its environment is.
        assert "AWS_SECRET_ACCESS_KEY" not in env
        assert "AWS_ACCESS_KEY_ID" not in env
        assert env["AWS_REGION"] == moto.region
    assert first["stdin"] == ""
    assert json.loads(second["stdin"]) == current
    finished = named(events, "hook.finished")
    assert [(e["hook"], e["kind"], e["attempts"], e["exit_code"]) for e in finished] == [
        (1, "exec", 1, 0),
        (2, "exec", 1, 0),
    ]
    names = [e["event"] for e in events]
    assert names.index("rotation.succeeded") < names.index("hook.finished")


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_a_failing_hook_is_retried_then_logged_and_the_rotation_stands(
    db: Database,
    secrets: Secrets,
    rotd: Rotd,
    moto: MotoServer,
    tmp_path: Path,
    events: list[Event],
) -> None:
    user, name = await make_login(db, secrets)
    runs = tmp_path / "runs"
    inv = with_hooks(moto, name, [{"exec": [PY, "-c", FAIL, str(runs)], "retries": 2}])
    runner = fast_runner(rotd)
    metrics = Metrics()
    runner.hooks.on_result = metrics.hook_finished

    outcome = await runner.rotate_one(inv.secrets[0])

    assert_ok(outcome)
    assert await secrets.version(name) == outcome.version_id
    assert await db.logs_in(user, (await secrets.value(name))["password"])
    assert runs.read_text().splitlines() == ["run"] * 3, "one run and two retries, no more"
    assert len(named(events, "hook.retry_scheduled")) == 2
    (failed,) = named(events, "hook.failed")
    assert failed["attempts"] == 3
    assert failed["exit_code"] == 1
    assert failed["error"] == "exited with status 1"
    assert failed["stdout"] == "reloading app\n"
    assert "the app refused to reload" in failed["stderr"]
    assert failed["secret_id"] == name
    assert failed["version_id"] == outcome.version_id
    assert len(named(events, "rotation.succeeded")) == 1
    assert not named(events, "rotation.failed")
    sample = metrics.registry.get_sample_value(
        "rotd_hook_runs_total", {"database": "testdb", "kind": "exec", "result": "failed"}
    )
    assert sample == 1.0


async def test_hooks_do_not_run_after_a_failed_rotation(
    rotd: Rotd, moto: MotoServer, tmp_path: Path, events: list[Event]
) -> None:
    marker = tmp_path / "ran"
    inv = with_hooks(
        moto, "rotd-test/does-not-exist", [{"exec": [PY, "-c", APPEND, str(marker), "ran"]}]
    )
    outcome = await rotd.rotate_one(inv)
    assert outcome.error is not None
    assert not marker.exists()
    assert not [e for e in events if e["event"].startswith("hook.")]
    assert await rotd_hooks(rotd).run(inv.secrets[0], outcome) == []
    skipped = dataclasses.replace(rotated(inv.secrets[0]), skipped=True)
    assert await rotd_hooks(rotd).run(inv.secrets[0], skipped) == []
    assert not marker.exists()


def rotd_hooks(rotd: Rotd) -> HookRunner:
    return HookRunner(rotd.store, backoff_base_s=0.01)


# --- exec hooks ---------------------------------------------------------------------------------


async def test_a_hook_past_its_timeout_is_killed_with_its_process_group(
    rotd: Rotd, spec: SecretSpec, tmp_path: Path, events: list[Event]
) -> None:
    pids = tmp_path / "pids"
    hooked = dataclasses.replace(spec, hooks=(exec_hook(PY, "-c", HANG, str(pids), timeout_s=1),))

    started = time.monotonic()
    (result,) = await rotd_hooks(rotd).run(hooked, rotated(spec))
    elapsed = time.monotonic() - started

    assert not result.ok
    assert result.attempts == 1
    assert elapsed < 5, f"the hook was not killed at its timeout ({elapsed:.1f}s)"
    child, hook = (int(p) for p in pids.read_text().split())
    # SIGKILL is sent; the processes end (and are reaped) a moment later.
    await until(lambda: gone(hook), "the hook to end", 5)
    await until(lambda: gone(child), "the hook's child to end (a process it started)", 5)
    (failed,) = named(events, "hook.failed")
    assert failed["error"] == "timed out after 1s; killed"
    assert failed["exit_code"] == -9


async def test_a_timeout_is_retried_like_any_failure(
    rotd: Rotd, spec: SecretSpec, tmp_path: Path, events: list[Event]
) -> None:
    runs = tmp_path / "runs"
    hang = f"{APPEND}; import time; time.sleep(60)"
    hooked = dataclasses.replace(
        spec, hooks=(exec_hook(PY, "-c", hang, str(runs), "run", timeout_s=0.5, retries=1),)
    )
    (result,) = await rotd_hooks(rotd).run(hooked, rotated(spec))
    assert not result.ok
    assert result.attempts == 2
    assert runs.read_text().splitlines() == ["run", "run"]
    assert named(events, "hook.failed")[0]["error"] == "timed out after 0.5s; killed"


async def test_the_secret_on_standard_input_is_masked_in_the_hook_output(
    rotd: Rotd, secrets: Secrets, moto: MotoServer, events: list[Event]
) -> None:
    password = "Hook-stdin-pass-" + str(time.monotonic_ns())
    value = {"engine": "postgres", "host": "h", "username": "app", "password": password}
    name = await secrets.create("stdin", value)
    (spec,) = with_hooks(moto, name, []).secrets
    hooked = dataclasses.replace(
        spec, hooks=(exec_hook(PY, "-c", ECHO_STDIN, include_secret=True),)
    )

    (result,) = await rotd_hooks(rotd).run(hooked, rotated(spec, await secrets.version(name)))

    assert result.ok
    (finished,) = named(events, "hook.finished")
    assert finished["stdout"].startswith("got {")
    assert "[REDACTED]" in finished["stdout"]
    assert password not in json.dumps(events)


async def test_long_output_is_cut_to_its_end(
    rotd: Rotd, spec: SecretSpec, events: list[Event]
) -> None:
    hooked = dataclasses.replace(spec, hooks=(exec_hook(PY, "-c", SPEW),))
    (result,) = await rotd_hooks(rotd).run(hooked, rotated(spec))
    assert result.ok
    (finished,) = named(events, "hook.finished")
    assert finished["stdout"].startswith("[…] ")
    assert finished["stdout"].endswith("the end")
    assert len(finished["stdout"]) <= OUTPUT_KEEP + 4


async def test_a_command_that_cannot_start_fails_without_retries(
    rotd: Rotd, spec: SecretSpec, tmp_path: Path, events: list[Event]
) -> None:
    missing = str(tmp_path / "no-such-command")
    hooked = dataclasses.replace(spec, hooks=(exec_hook(missing, retries=3),))
    (result,) = await rotd_hooks(rotd).run(hooked, rotated(spec))
    assert not result.ok
    assert result.attempts == 1
    assert result.error is not None
    assert "cannot start" in result.error
    assert not named(events, "hook.retry_scheduled")


# --- webhooks -----------------------------------------------------------------------------------


async def test_a_webhook_posts_the_ids_signed_with_hmac(
    rotd: Rotd, spec: SecretSpec, receiver: Receiver, tmp_path: Path, events: list[Event]
) -> None:
    key_file = tmp_path / "hook.key"
    key_file.write_text("shared-hmac-key-1\n")  # the trailing newline is not part of the key
    hooked = dataclasses.replace(spec, hooks=(webhook(receiver.url, key=key_file),))
    outcome = rotated(spec)

    before = int(time.time())
    (result,) = await rotd_hooks(rotd).run(hooked, outcome)

    assert result.ok
    ((headers, body),) = receiver.requests
    payload = json.loads(body)
    assert set(payload) == {
        "secret_id",
        "secret_arn",
        "version_id",
        "username",
        "database",
        "rotated_at",
    }
    assert payload["secret_id"] == spec.id
    assert payload["secret_arn"] == outcome.arn
    assert payload["version_id"] == outcome.version_id
    assert payload["username"] == outcome.new_username
    assert payload["database"] == "testdb"
    assert headers["Content-Type"] == "application/json"
    timestamp = headers["X-Rotd-Timestamp"]
    assert before <= int(timestamp) <= int(time.time())
    expected = hmac.new(b"shared-hmac-key-1", f"{timestamp}.".encode() + body, hashlib.sha256)
    assert hmac.compare_digest(headers["X-Rotd-Signature"], "sha256=" + expected.hexdigest())
    (finished,) = named(events, "hook.finished")
    assert finished["status"] == 200
    assert finished["kind"] == "webhook"
    assert "tok-9f8e7d6c5b4a" not in json.dumps(events), "the URL's token reached a log"


async def test_a_webhook_answering_500_is_retried_until_it_succeeds(
    rotd: Rotd, spec: SecretSpec, receiver: Receiver, events: list[Event]
) -> None:
    receiver.answers = [500, 503]
    hooked = dataclasses.replace(spec, hooks=(webhook(receiver.url, retries=3),))
    (result,) = await rotd_hooks(rotd).run(hooked, rotated(spec))
    assert result.ok
    assert result.attempts == 3
    assert len(receiver.requests) == 3
    assert len({body for _, body in receiver.requests}) == 1, "every attempt sends the same body"
    retries = named(events, "hook.retry_scheduled")
    assert [e["status"] for e in retries] == [500, 503]
    assert named(events, "hook.finished")[0]["attempts"] == 3


async def test_a_webhook_refusing_with_4xx_is_not_retried(
    rotd: Rotd, spec: SecretSpec, receiver: Receiver, events: list[Event]
) -> None:
    receiver.answers = [403]
    hooked = dataclasses.replace(spec, hooks=(webhook(receiver.url, retries=3),))
    (result,) = await rotd_hooks(rotd).run(hooked, rotated(spec))
    assert not result.ok
    assert len(receiver.requests) == 1
    (failed,) = named(events, "hook.failed")
    assert (failed["status"], failed["error"], failed["response"]) == (
        403,
        "answered HTTP 403",
        "answer 403",
    )


async def test_a_webhook_that_does_not_answer_in_time_fails_after_its_retries(
    rotd: Rotd, spec: SecretSpec, receiver: Receiver, events: list[Event]
) -> None:
    receiver.answers = ["hang", "hang"]
    hooked = dataclasses.replace(spec, hooks=(webhook(receiver.url, timeout_s=0.5, retries=1),))
    started = time.monotonic()
    (result,) = await rotd_hooks(rotd).run(hooked, rotated(spec))
    assert time.monotonic() - started < 5
    assert not result.ok
    assert result.attempts == 2
    assert len(receiver.requests) == 2
    assert named(events, "hook.failed")[0]["error"] == "no answer within 0.5s"


async def test_an_unreadable_hmac_key_fails_the_webhook_without_sending_it(
    rotd: Rotd, spec: SecretSpec, receiver: Receiver, tmp_path: Path, events: list[Event]
) -> None:
    hooked = dataclasses.replace(
        spec, hooks=(webhook(receiver.url, retries=3, key=tmp_path / "missing.key"),)
    )
    (result,) = await rotd_hooks(rotd).run(hooked, rotated(spec))
    assert not result.ok
    assert receiver.requests == []
    assert "cannot read hmac_key_file" in named(events, "hook.failed")[0]["error"]


# --- order --------------------------------------------------------------------------------------


async def test_hooks_run_in_order_and_a_failing_one_does_not_stop_the_next(
    rotd: Rotd, spec: SecretSpec, receiver: Receiver, tmp_path: Path
) -> None:
    trail = tmp_path / "trail"
    seen_by_webhook: list[list[str]] = []
    receiver.on_request = lambda: seen_by_webhook.append(trail.read_text().splitlines())
    hooked = dataclasses.replace(
        spec,
        hooks=(
            exec_hook(PY, "-c", APPEND, str(trail), "first"),
            exec_hook(PY, "-c", "raise SystemExit(2)"),
            webhook(receiver.url),
            exec_hook(PY, "-c", APPEND, str(trail), "last"),
        ),
    )
    results = await rotd_hooks(rotd).run(hooked, rotated(spec))
    assert [(r.index, r.kind, r.ok) for r in results] == [
        (1, "exec", True),
        (2, "exec", False),
        (3, "webhook", True),
        (4, "exec", True),
    ]
    assert seen_by_webhook == [["first"]]
    assert trail.read_text().splitlines() == ["first", "last"]


async def test_a_secret_cut_in_half_by_the_output_window_is_not_logged(
    rotd: Rotd, spec: SecretSpec, events: list[Event]
) -> None:
    """Only the end of a long output is kept; a secret the cut falls into cannot be recognised
    by the scrubber, so the text next to the cut is dropped too."""
    password = "Cut-" + "q" * 996
    redactor.add(password)
    # The 64 KiB window starts 5 bytes into the password; many copies after it shrink to
    # [REDACTED] and would otherwise bring its tail into the last 4096 characters logged.
    after = 65536 + 5 - len(password)
    script = (
        f"import sys; p = {password!r}; n = {after} // len(p); "
        f"sys.stdout.write('x' * 1000 + p + p * n + 'y' * ({after} - n * len(p)))"
    )
    hooked = dataclasses.replace(spec, hooks=(exec_hook(PY, "-c", script),))
    (result,) = await rotd_hooks(rotd).run(hooked, rotated(spec))
    assert result.ok
    (finished,) = named(events, "hook.finished")
    assert finished["stdout"].startswith("[…] ")
    assert "qqqq" not in finished["stdout"]
