"""Rendering AWSCURRENT into files, for applications that cannot call Secrets Manager.

Each ``render`` entry of the inventory names a secret and a file. :class:`Renderer` reads the
secret's AWSCURRENT value, fills the entry's template (Jinja2, sandboxed; by default the
secret's string as stored) and writes the file atomically: a temporary file in the same
directory, its mode (and owner) set before the first byte, written, fsynced and renamed over
the old one, so that a reader sees the whole old file or the whole new one. A file is written
only when its content changed, and only then is the entry's ``on_change`` command run, through
:mod:`rotd.commands`. A failure (the secret unreadable, the template failing, the directory
not writable) leaves the previous file in place and is logged as ``render.failed`` and
counted; the entry is tried again at its next refresh. The daemon renders at start, after each
of its own rotations and every ``refresh``; ``rotd render`` does the same without rotating.
The values read are registered with the redactor; a file's content is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import grp
import json
import os
import pwd
import signal
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rotd.commands import run_command
from rotd.errors import RotdError
from rotd.inventory import Inventory, RenderSpec, secret_name
from rotd.observability import get_logger, log_unexpected, redactor

if TYPE_CHECKING:
    from rotd.secretstore import SecretStore

log = get_logger("rotd.render")

# The label read, always named: moto answers an unqualified read with the first version. (Not
# imported from rotd.secretstore: `rotd validate` compiles templates here without loading AWS.)
CURRENT = "AWSCURRENT"

# The keys of a database secret that are not secret: their values stay readable in logs.
# Every other string value of a rendered secret (password, derived URLs, API keys) is masked.
PUBLIC_KEYS = frozenset({"engine", "host", "port", "username", "dbname", "ssl", "masterarn"})


class RenderError(RotdError):
    """Why one file could not be rendered; the previous file is left as it was."""

    def __init__(self, path: str, stage: str, reason: str) -> None:
        self.path = path
        self.stage = stage  # read, template, write
        self.reason = reason
        super().__init__(f"render {path}: {stage}: {reason}")


@dataclass(frozen=True)
class RenderResult:
    """How one render of one entry ended."""

    path: str
    secret: str
    ok: bool
    changed: bool = False  # the file's content was replaced
    version_id: str | None = None
    error: str | None = None
    stage: str | None = None
    at: float = 0.0  # epoch seconds


# --- templates ----------------------------------------------------------------------------------


def check_template(text: str) -> None:
    """Raise ValueError, saying where and what, unless ``text`` compiles as a template (the
    sandbox and filters of :mod:`rotd.templates`, as derived keys)."""
    from rotd import templates

    for problem in templates.problems(text):
        raise ValueError(f"template line {problem.line}: {problem.reason}")


def fill(spec: RenderSpec, string: str) -> bytes:
    """The file's content for a secret whose AWSCURRENT string is ``string``.

    Without a template it is the string as stored. A template sees the top-level keys of the
    secret's JSON object as variables, and the whole object (or the string, when it is not a
    JSON object) as ``secret``. Raises RenderError (stage ``template``)."""
    _register(string)
    if spec.template is None:
        return string.encode()
    from rotd import templates

    try:
        document = json.loads(string)
    except ValueError:
        document = None
    context: dict[str, Any] = {"secret": document if isinstance(document, dict) else string}
    if isinstance(document, dict):
        context.update({k: v for k, v in document.items() if isinstance(k, str)})
    try:
        text = templates.render(spec.template, context)
    except templates.RenderError as exc:
        raise RenderError(spec.path, "template", exc.reason) from None
    return text.encode()


def _register(string: str) -> None:
    """Mask the secret's values wherever rotd might print them; its public keys stay."""
    try:
        document = json.loads(string)
    except ValueError:
        redactor.add(string)
        return
    if not isinstance(document, dict):
        redactor.add(string)
        return
    redactor.add(string, fragments=False)
    for key, value in document.items():
        if key not in PUBLIC_KEYS and isinstance(value, str):
            redactor.add(value)


# --- files --------------------------------------------------------------------------------------


def _ids(spec: RenderSpec) -> tuple[int, int]:
    """The uid and gid to give the file, -1 for "leave as is" (os.fchown's convention)."""
    try:
        uid = _id(spec.owner, lambda name: pwd.getpwnam(name).pw_uid)
        gid = _id(spec.group, lambda name: grp.getgrnam(name).gr_gid)
    except KeyError as exc:
        raise RenderError(
            spec.path, "write", f"no such user or group on this host: {exc}"
        ) from None
    return uid, gid


def _id(value: str | int | None, lookup: Callable[[str], int]) -> int:
    """A number as it is (also written as a string), a name looked up, None as -1."""
    if value is None:
        return -1
    if isinstance(value, int):
        return value
    return int(value) if value.isdigit() else lookup(value)


def write_file(spec: RenderSpec, content: bytes) -> bool:
    """Replace ``spec.path`` with ``content`` atomically unless it holds it already, with the
    entry's mode and owner; whether the content changed. Raises RenderError (stage ``write``)."""
    uid, gid = _ids(spec)
    path = Path(spec.path)
    try:
        current = path.read_bytes()
        st = path.stat()
    except FileNotFoundError:
        current, st = None, None
    except OSError as exc:
        raise RenderError(spec.path, "write", f"cannot read the file: {exc.strerror}") from None
    if (
        current == content
        and st is not None
        and (st.st_mode & 0o7777) == spec.mode
        and uid in (-1, st.st_uid)
        and gid in (-1, st.st_gid)
    ):
        return False
    _remove_leftovers(path)
    try:
        # mkstemp creates the file 0600 and only this process has it open: no reader can see
        # it, let alone read it, until the rename.
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise RenderError(
            spec.path, "write", f"cannot create a file in {path.parent}: {exc.strerror}"
        ) from None
    try:
        try:
            os.fchmod(fd, spec.mode)
            if (uid, gid) != (-1, -1):
                os.fchown(fd, uid, gid)
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise RenderError(spec.path, "write", f"{exc.strerror or exc}") from None
    _sync_directory(path.parent)
    return current != content


LEFTOVER_AGE_S = 300.0


def _remove_leftovers(path: Path) -> None:
    """Remove the temporary files a write that was cut short (rotd killed between creating
    and renaming one) left beside ``path``; only old ones, so that no write in progress loses
    its file."""
    limit = time.time() - LEFTOVER_AGE_S
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            if leftover.lstat().st_mtime < limit:
                leftover.unlink()


def _sync_directory(directory: Path) -> None:
    # The rename is durable only once the directory is: after a crash the file is old or new.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- rotd status --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileReport:
    """``rotd status`` for one rendered file: whether it holds what AWSCURRENT renders to."""

    path: str
    secret: str
    version_id: str | None = None
    modified: str | None = None
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "secret": self.secret,
            "version_id": self.version_id,
            "modified": self.modified,
            "problem": self.problem,
        }

    def line(self) -> str:
        state = f"PROBLEM: {self.problem}" if self.problem else "ok (current)"
        return (
            f"render {self.path}  <- {self.secret} version={self.version_id or '-'} "
            f"modified={self.modified or '-'}  {state}"
        )


async def file_report(spec: RenderSpec, store: SecretStore) -> FileReport:
    """Compare the file with what AWSCURRENT renders to now; write nothing."""
    from datetime import UTC, datetime

    try:
        value = await store.get_value(spec.secret, stage=CURRENT)
    except RotdError as exc:
        return FileReport(spec.path, spec.secret, problem=f"cannot read the secret: {exc}")
    try:
        content = fill(spec, value.string)
    except RenderError as exc:
        return FileReport(spec.path, spec.secret, value.version_id, problem=exc.reason)
    try:
        current = await asyncio.to_thread(Path(spec.path).read_bytes)
        stamp = (await asyncio.to_thread(Path(spec.path).stat)).st_mtime
    except OSError as exc:
        unreadable = f"the file cannot be read: {exc.strerror}"
        return FileReport(spec.path, spec.secret, value.version_id, problem=unreadable)
    modified = datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")
    problem: str | None = None
    if current != content:
        problem = (
            f"stale: AWSCURRENT ({value.version_id}) renders to other content; rotd has not "
            "written it yet, or its renders fail (see render.failed events)"
        )
    return FileReport(spec.path, spec.secret, value.version_id, modified, problem)


# --- rotd doctor --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One check of a render entry for ``rotd doctor``: passed or not, and what to do."""

    ok: bool
    name: str
    detail: str
    fix: str | None = None


def _directory_writable(directory: Path) -> str | None:
    """Why no file can be created in ``directory``, or None: a file is made and removed."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".rotd-doctor.", dir=directory)
    except OSError as exc:
        return f"cannot create a file in {directory}: {exc.strerror}"
    os.close(fd)
    os.unlink(probe)
    return None


async def examine(spec: RenderSpec, store: SecretStore) -> list[Finding]:
    """What rendering ``spec`` needs, checked without writing the file: the directory is
    writable, the owner and group exist, the secret is readable and the template fills."""
    found: list[Finding] = []
    directory = Path(spec.path).parent
    problem = await asyncio.to_thread(_directory_writable, directory)
    if problem is None:
        found.append(Finding(True, "render.directory", f"{directory} is writable"))
    else:
        found.append(
            Finding(
                False,
                "render.directory",
                problem,
                "create the directory and let rotd's user write it (in Kubernetes, a shared "
                "emptyDir volume mounted in both containers)",
            )
        )
    if spec.owner is not None or spec.group is not None:
        try:
            _ids(spec)
            found.append(Finding(True, "render.owner", "owner and group exist"))
        except RenderError as exc:
            found.append(
                Finding(False, "render.owner", exc.reason, "create them or fix owner/group")
            )
    try:
        value = await store.get_value(spec.secret, stage=CURRENT)
    except RotdError as exc:
        found.append(
            Finding(
                False,
                "render.secret",
                str(exc),
                "fix the secret's name, or grant rotd secretsmanager:GetSecretValue on it "
                "(rotd iam-policy prints the policy)",
            )
        )
        return found
    found.append(Finding(True, "render.secret", f"AWSCURRENT {value.version_id} is readable"))
    try:
        content = fill(spec, value.string)
    except RenderError as exc:
        found.append(
            Finding(
                False,
                "render.template",
                exc.reason,
                "fix the template, or add the keys it names to the secret",
            )
        )
        return found
    try:
        current: bytes | None = await asyncio.to_thread(Path(spec.path).read_bytes)
    except OSError:
        current = None
    state = "is current" if current == content else "will be written at the next render"
    found.append(Finding(True, "render.template", f"fills {len(content)} bytes; the file {state}"))
    return found


# --- the renderer -------------------------------------------------------------------------------


def reads(spec: RenderSpec, secret_id: str) -> bool:
    """Whether the entry renders the secret ``secret_id`` (by name or ARN)."""
    return secret_name(spec.secret) == secret_name(secret_id)


class Renderer:
    """Keeps the inventory's rendered files current; one per ``rotd run`` or ``rotd render``.

    ``on_result`` observes each render (Metrics.render_finished fits); ``on_fault`` each
    unexpected exception, with (path, "render").
    """

    def __init__(self, store: SecretStore, renders: Iterable[RenderSpec]) -> None:
        self.store = store
        self.renders = tuple(renders)
        self.on_result: Callable[[RenderResult], None] | None = None
        self.on_fault: Callable[[str, str], None] | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._owed: set[str] = set()  # files whose on_change failed: run it at the next render
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def render_all(self) -> list[RenderResult]:
        """Render every entry now, concurrently; never raises but ``CancelledError``."""
        return list(await asyncio.gather(*(self.render(spec) for spec in self.renders)))

    async def render(self, spec: RenderSpec) -> RenderResult:
        """Render one entry: the boundary that catches everything but ``CancelledError``."""
        lock = self._locks.setdefault(spec.path, asyncio.Lock())
        entry_log = log.bind(path=spec.path, secret_id=spec.secret)
        async with lock:
            try:
                result = await self._render(spec, entry_log)
            except RenderError as exc:
                result = RenderResult(
                    spec.path, spec.secret, False, error=exc.reason, stage=exc.stage, at=time.time()
                )
                entry_log.error(
                    "render.failed",
                    stage=exc.stage,
                    error=exc.reason,
                    action="the previous file is left in place; fix the cause, rotd tries "
                    "again at the next refresh",
                )
            except Exception as exc:  # a bug must not end the refresh of this file, or others
                log_unexpected(entry_log, "render", exc)
                if self.on_fault is not None:
                    self.on_fault(spec.path, "render")
                error = f"unexpected {type(exc).__name__}: {exc} (a fault in rotd)"
                result = RenderResult(
                    spec.path, spec.secret, False, error=error, stage="internal", at=time.time()
                )
                entry_log.error("render.failed", stage="internal", error=error)
        if self.on_result is not None:
            self.on_result(result)
        return result

    async def _render(self, spec: RenderSpec, entry_log: Any) -> RenderResult:
        started = time.monotonic()
        try:
            value = await self.store.get_value(spec.secret, stage=CURRENT)
        except RotdError as exc:
            raise RenderError(spec.path, "read", str(exc)) from None
        content = fill(spec, value.string)
        changed = await asyncio.to_thread(write_file, spec, content)
        result = RenderResult(
            spec.path, spec.secret, True, changed, value.version_id, at=time.time()
        )
        if changed:
            entry_log.info(
                "render.written",
                version_id=value.version_id,
                bytes=len(content),
                duration_s=round(time.monotonic() - started, 4),
            )
            self._owed.add(spec.path)
        else:
            entry_log.debug("render.unchanged", version_id=value.version_id)
        if spec.on_change is not None and spec.path in self._owed:
            if await self._on_change(spec, value.version_id, entry_log):
                self._owed.discard(spec.path)
        else:
            self._owed.discard(spec.path)
        return result

    async def _on_change(self, spec: RenderSpec, version_id: str, entry_log: Any) -> bool:
        """Run the entry's ``on_change``; whether it succeeded. The secret is in neither its
        arguments nor its environment: it reads the file."""
        from rotd.hooks import exec_env

        assert spec.on_change is not None
        env = exec_env(
            {
                "ROTD_RENDER_PATH": spec.path,
                "ROTD_SECRET_ID": spec.secret,
                "ROTD_VERSION_ID": version_id,
            }
        )
        timeout_s = max(spec.on_change_timeout.total_seconds(), 0.001)
        ran = await run_command(spec.on_change, env, None, timeout_s)
        fields = {"exit_code": ran.exit_code, "stdout": ran.stdout, "stderr": ran.stderr}
        error = ran.error
        if error is None and ran.timed_out:
            error = f"timed out after {timeout_s:g}s; killed"
        elif error is None and ran.exit_code != 0:
            error = f"exited with {ran.exit_text}"
        if error is None:
            entry_log.info("render.on_change_finished", duration_s=ran.duration_s, **fields)
            return True
        entry_log.error(
            "render.on_change_failed",
            error=error,
            action="the file is written; rotd runs on_change again at the next refresh",
            **fields,
        )
        return False

    # --- keeping files current ------------------------------------------------------------------

    def start(self, *, render_first: bool = False) -> None:
        """Start one refresh loop per entry; with ``render_first`` each renders at once."""
        for spec in self.renders:
            self._start_loop(spec, render_first)

    def _start_loop(self, spec: RenderSpec, render_first: bool) -> None:
        task = asyncio.create_task(self._refresh(spec, render_first), name=f"render:{spec.path}")
        self._loops[spec.path] = task

    async def _refresh(self, spec: RenderSpec, render_first: bool) -> None:
        if render_first:
            await self.render(spec)
        while True:
            await asyncio.sleep(spec.refresh.total_seconds())
            await self.render(spec)

    def rotated(self, secret_id: str) -> None:
        """This process has just rotated ``secret_id``: render its files now."""
        for spec in self.renders:
            if reads(spec, secret_id):
                self._spawn(self.render(spec))

    def replace(self, renders: Iterable[RenderSpec]) -> None:
        """A reload: entries gone stop, new or changed ones start and render at once."""
        new = {spec.path: spec for spec in renders}
        old = {spec.path: spec for spec in self.renders}
        for path, spec in old.items():
            if new.get(path) != spec and path in self._loops:
                self._loops.pop(path).cancel()
                self._owed.discard(path)
        self.renders = tuple(new.values())
        for path, spec in new.items():
            if old.get(path) != spec:
                self._start_loop(spec, True)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop every loop and render in flight, and wait for them."""
        tasks = [*self._loops.values(), *self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loops.clear()


# --- rotd render --------------------------------------------------------------------------------


async def render_once(inventory: Inventory) -> list[RenderResult]:
    """``rotd render --once``: every entry once."""
    from rotd.secretstore import AwsSecretStore, connection_for

    async with AwsSecretStore(connection_for(inventory)) as store:
        return await Renderer(store, inventory.renders).render_all()


async def serve(inventory: Inventory, load: Callable[[str], Inventory]) -> int:
    """``rotd render`` without ``--once``: keep the files current until SIGTERM or SIGINT;
    SIGHUP reloads the inventory's render entries (``load`` reads it; a bad one is kept out).
    Rotates nothing. Returns the exit code."""
    from rotd.errors import ConfigErrors
    from rotd.observability import Metrics, serve_http
    from rotd.secretstore import AwsSecretStore, connection_for

    stop, reload = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    metrics = Metrics()
    async with contextlib.AsyncExitStack() as stack:
        for sig, event in ((signal.SIGTERM, stop), (signal.SIGINT, stop), (signal.SIGHUP, reload)):
            loop.add_signal_handler(sig, event.set)
            stack.callback(loop.remove_signal_handler, sig)
        store = await stack.enter_async_context(AwsSecretStore(connection_for(inventory)))
        renderer = Renderer(store, inventory.renders)
        renderer.on_result = metrics.render_finished
        renderer.on_fault = metrics.unexpected_error
        if inventory.listen is not None:
            await stack.enter_async_context(serve_http(*inventory.listen, metrics, lambda: True))
        stack.push_async_callback(renderer.close)
        results = await renderer.render_all()
        renderer.start()
        log.info(
            "render.ready",
            files=len(results),
            failed=sum(1 for r in results if not r.ok),
        )
        while not stop.is_set():
            waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(reload.wait())}
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if reload.is_set() and not stop.is_set():
                reload.clear()
                try:
                    new = await asyncio.to_thread(load, inventory.path)
                except ConfigErrors as exc:
                    log.error(
                        "reload.rejected",
                        path=inventory.path,
                        errors=[str(e) for e in exc.errors],
                        kept_files=len(renderer.renders),
                    )
                    continue
                inventory = new
                renderer.replace(new.renders)
                log.info("reload.applied", files=len(new.renders))
        log.info("render.stopped")
    return 0
