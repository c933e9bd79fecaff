"""Running one command for rotd: ``on_rotated`` hooks and the exec engine's commands alike.

A command runs without a shell, in a session (and so a process group) of its own, with the
environment and standard input it is given. Its output is read to the end while only the last
bytes are kept, and those are scrubbed of every secret value before anyone sees them. On a
timeout, or when rotd stops waiting, the whole process group is killed: what a command left
running in the background dies with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rotd.observability import redactor

OUTPUT_KEEP = 4096  # characters of each output stream given back (its end)
_OUTPUT_WINDOW = 65536  # bytes of each stream held in memory; the rest is read and dropped
_SECRET_MARGIN = 8192  # characters dropped at a cut, so that half a secret is never shown
_KILL_WAIT_S = 2.0  # after a kill, how long to wait for the output pipes to close


@dataclass(frozen=True)
class Ran:
    """How one run ended: its exit code (None when it never started), whether it was killed
    for its timeout, why it could not start, and the end of each output, scrubbed."""

    exit_code: int | None = None
    timed_out: bool = False
    error: str | None = None
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0

    @property
    def exit_text(self) -> str:
        """``status 3`` or ``signal SIGKILL``: the exit as an operator reads it."""
        code = self.exit_code
        if code is not None and code < 0:
            try:
                return f"signal {signal.Signals(-code).name}"
            except ValueError:
                return f"signal {-code}"
        return f"status {code}"


async def run_command(
    argv: Sequence[str], env: Mapping[str, str], stdin: bytes | None, timeout_s: float
) -> Ran:
    """Run ``argv`` once; its standard input is ``stdin``, or empty when it is None. Never
    raises for the command's own failure (not starting, a non-zero exit, the timeout)."""
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            start_new_session=True,
        )
    except OSError as exc:
        return Ran(error=f"cannot start {argv[0]!r}: {exc.strerror or exc}")
    out, err = _Tail(), _Tail()
    readers = {
        asyncio.ensure_future(out.read(proc.stdout)),
        asyncio.ensure_future(err.read(proc.stderr)),
    }
    timed_out = False
    try:
        async with asyncio.timeout(timeout_s):
            if stdin is not None:
                await _feed(proc.stdin, stdin)
            # wait() rather than gather(): a timeout must not cancel the readers, whose output
            # is still wanted.
            await asyncio.wait(readers)
            await proc.wait()
    except TimeoutError:
        timed_out = True
        _kill_group(proc)
        # The pipes close once the group is dead; a process that left the group may hold them.
        waiter = asyncio.ensure_future(proc.wait())
        await asyncio.wait({*readers, waiter}, timeout=_KILL_WAIT_S)
        waiter.cancel()
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        for reader in readers:
            reader.cancel()
    return Ran(
        exit_code=proc.returncode,
        timed_out=timed_out,
        stdout=out.text(),
        stderr=err.text(),
        duration_s=round(time.monotonic() - started, 4),
    )


class _Tail:
    """The last bytes of an output stream, read to its end; the rest is dropped as it comes."""

    def __init__(self) -> None:
        self.kept = bytearray()
        self.total = 0

    async def read(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while chunk := await stream.read(65536):
            self.total += len(chunk)
            self.kept += chunk
            if len(self.kept) > _OUTPUT_WINDOW:
                del self.kept[: len(self.kept) - _OUTPUT_WINDOW]

    def text(self) -> str:
        """The end of the output, secret values masked, at most :data:`OUTPUT_KEEP` characters."""
        text = redactor.scrub(self.kept.decode("utf-8", "replace"))
        cut = self.total > len(self.kept)
        if cut:
            # The window may start inside a secret, which the scrubber cannot recognise.
            text = text[_SECRET_MARGIN:]
        if cut or len(text) > OUTPUT_KEEP:
            return "[…] " + text[-OUTPUT_KEEP:]
        return text


async def _feed(pipe: asyncio.StreamWriter | None, data: bytes) -> None:
    assert pipe is not None
    try:
        pipe.write(data)
        await pipe.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the command did not read its standard input: its choice
    finally:
        pipe.close()


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    # The whole group, even when the command itself has exited: what it started in the
    # background may be what holds the output open. Linux keeps a live group's id from reuse.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
