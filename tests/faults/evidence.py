"""What the logs of every rotd process and the secrets' version histories prove afterwards.

Each helper returns the violations it found (empty when the invariant held), so that a test
can assert on them and print them whole.

- :func:`rotations`: every successful rotation (``rotation.succeeded`` or ``.resumed``) from
  the moment it read the secret's state (its guard step was logged: the DescribeSecret it
  acted on had been answered) to the moment its finishSecret step was logged (AWSCURRENT had
  moved). Its lock was held within that span. (The event's timestamp less ``duration_s`` is
  earlier: it includes the guard's retries, during which nothing was read yet.)
- :func:`overlaps`: two successful rotations of one secret by two processes whose spans
  overlap: the rotation lock failed to keep them apart.
- :func:`finished_twice`: a version finished by two rotations.
- :func:`concurrent_creates`: two processes in createSecret of one secret at once, each with
  the lock as far as it knew.
- :func:`abandoned`: a version that was created as AWSPENDING but never became AWSCURRENT,
  i.e. a rotation that was restarted with a new token instead of being resumed.
- :func:`early_rotations`: a version that a daemon made before its predecessor was due.
- :func:`leaks`: a password, hash or verifier in a text rotd wrote.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rotd.passwords import mysql_native_hash, postgres_md5_verifier
from tests.faults.chaos import Run
from tests.faults.witness import Attempt, Version

__all__ = [
    "Rotation",
    "abandoned",
    "concurrent_creates",
    "early_rotations",
    "finished_twice",
    "leaks",
    "outside_windows",
    "overlaps",
    "rotations",
]


@dataclass(frozen=True)
class Rotation:
    secret_id: str
    version_id: str
    label: str  # succeeded | resumed
    start: float  # when its guard step was logged
    finished: float  # when its finishSecret step was logged
    end: float
    process: int  # index of the run in the test's list
    kind: str
    phase: str
    ambiguous: bool = False  # its process logged rotation.finish_ambiguous for it


def stamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def rotations(runs: list[Run]) -> list[Rotation]:
    found = []
    for index, run in enumerate(runs):
        guarded: dict[str, float] = {}  # secret -> when its last guard step was logged
        finish_logged: dict[tuple[str, str], float] = {}
        ambiguous: set[tuple[str, str]] = set()
        for event in list(run.process.events):
            name = event.get("event")
            secret_id = event.get("secret_id")
            if name == "rotation.step" and event.get("step") == "guard":
                guarded[secret_id] = stamp(event)
            elif name == "rotation.step" and event.get("step") == "finishSecret":
                finish_logged[(secret_id, event.get("version_id"))] = stamp(event)
            elif name == "rotation.finish_ambiguous":
                ambiguous.add((secret_id, event.get("version_id")))
            elif name in ("rotation.succeeded", "rotation.resumed"):
                end = stamp(event)
                found.append(
                    Rotation(
                        secret_id=event["secret_id"],
                        version_id=event["version_id"],
                        label=name.rpartition(".")[2],
                        start=guarded.get(secret_id, end - float(event["duration_s"])),
                        finished=finish_logged.get((secret_id, event["version_id"]), end),
                        end=end,
                        process=index,
                        kind=run.kind,
                        phase=run.phase,
                        ambiguous=(secret_id, event["version_id"]) in ambiguous,
                    )
                )
    return found


def overlaps(found: Iterable[Rotation], slack_s: float) -> list[tuple[Rotation, Rotation]]:
    """Pairs of successful rotations of one secret, by different processes, that overlap.

    A rotation can only succeed if AWSCURRENT is, under its lock, what its guard read; so if
    another rotation finished in between it fails (``locked``), and of two successes the
    later one read the state after the earlier one's finishSecret. Both instants are logged a
    moment after Secrets Manager answered (the answer's way back through the proxy, a loaded
    machine, the log call), hence ``slack_s``.
    """
    bad = []
    by_secret: dict[str, list[Rotation]] = {}
    for rotation in found:
        by_secret.setdefault(rotation.secret_id, []).append(rotation)
    for items in by_secret.values():
        items.sort(key=lambda r: r.start)
        for i, first in enumerate(items):
            for second in items[i + 1 :]:
                if second.start >= first.finished - slack_s:
                    continue
                if second.process != first.process:
                    bad.append((first, second))
    return bad


def concurrent_creates(runs: list[Run]) -> dict[tuple[str, str], str]:
    """Versions whose createSecret (which holds the lock from try_lock to PutSecretValue)
    overlapped another process's createSecret of the same secret: both believed they held
    the lock, so one had lost it. Maps (secret, version) to a description."""
    steps = []
    for index, run in enumerate(runs):
        for event in list(run.process.events):
            if event.get("event") == "rotation.step" and event.get("step") == "createSecret":
                end = stamp(event)
                start = end - float(event["duration_s"])
                steps.append((event["secret_id"], event["version_id"], start, end, index))
    found = {}
    for secret, version, start, end, index in steps:
        for other, other_version, other_start, other_end, other_index in steps:
            rival = other == secret and other_index != index and version != other_version
            if rival and start < other_end and other_start < end:
                found[(secret, version)] = (
                    f"createSecret of {version} (run {index}, {start:.3f}..{end:.3f}) "
                    f"overlapped that of {other_version} (run {other_index}, "
                    f"{other_start:.3f}..{other_end:.3f})"
                )
    return found


def finished_twice(found: Iterable[Rotation]) -> list[tuple[str, str]]:
    """Versions reported finished by more than one process, but for a report its process
    said may be a second one (``rotation.finish_ambiguous``: Secrets Manager records no
    author of a move, see ``test_cuts``); two reports that each claim the move are a bug."""
    counts = Counter((r.secret_id, r.version_id) for r in found if not r.ambiguous)
    return [key for key, n in counts.items() if n > 1]


def abandoned(
    history: dict[str, list[Version]],
    found: Iterable[Rotation],
    finish_steps: set[tuple[str, str]],
    seen_current: dict[str, dict[str, float]],
) -> list[tuple[str, str]]:
    """Versions after the first that never held AWSCURRENT, by every account we have.

    A version counts as finished when a process logged its finishSecret step or its success,
    when a witness saw it as AWSCURRENT, or when it is AWSCURRENT or AWSPREVIOUS now.
    """
    finished = {(r.secret_id, r.version_id) for r in found} | finish_steps
    bad = []
    for secret_id, versions in history.items():
        for version in versions[1:]:
            key = (secret_id, version.version_id)
            if key in finished or version.version_id in seen_current.get(secret_id, {}):
                continue
            if {"AWSCURRENT", "AWSPREVIOUS"} & set(version.stages):
                continue
            bad.append(key)
    return bad


def early_rotations(
    history: dict[str, list[Version]], made_from: float, made_until: float, interval_s: float
) -> list[tuple[str, str, float]]:
    """Versions created in ``[made_from, made_until)`` less than ``interval_s`` after the
    version before them: rotated before due, e.g. twice for one due time.

    Moto stores CreatedDate in whole seconds, and rotd computes the due time from that same
    truncated value, so a rotation on time is never less than ``interval_s`` after it.
    """
    bad = []
    for secret_id, versions in history.items():
        for before, version in itertools.pairwise(versions):
            if made_from <= version.created < made_until:
                gap = version.created - before.created
                if gap < interval_s:
                    bad.append((secret_id, version.version_id, gap))
    return bad


def made_in(history: dict[str, list[Version]], made_from: float, made_until: float) -> Counter[str]:
    """How many versions of each secret were created in ``[made_from, made_until)``."""
    return Counter(
        secret_id
        for secret_id, versions in history.items()
        for v in versions
        if made_from <= v.created < made_until
    )


def outside_windows(
    attempts: Iterable[Attempt], versions: dict[str, Version], slack_s: float
) -> list[Attempt]:
    """Single-user refusals of AWSCURRENT that no rotation explains.

    Such a refusal is expected only once the pending version exists (createSecret precedes
    setSecret) and while AWSCURRENT has not moved (the witness checked that). ``slack_s``
    covers moto's whole-second CreatedDate.
    """
    bad = []
    for attempt in attempts:
        pending = versions.get(attempt.pending or "")
        if pending is None or attempt.ended < pending.created - slack_s:
            bad.append(attempt)
    return bad


def secret_strings(history: dict[str, list[Version]]) -> dict[str, str]:
    """Every password stored, with the hashes and verifiers rotd could compute from it,
    mapped to a description that names no secret."""
    found: dict[str, str] = {}
    for secret_id, versions in history.items():
        for version in versions:
            password = version.value.get("password")
            username = version.value.get("username", "")
            if not isinstance(password, str):
                continue
            where = f"{secret_id} version {version.version_id}"
            found[password] = f"the password of {where}"
            found[mysql_native_hash(password)] = f"the MySQL hash of {where}"
            found[postgres_md5_verifier(username, password)] = f"the MD5 verifier of {where}"
    return found


def leaks(texts: dict[str, str], secrets: dict[str, str], *, scram: bool = True) -> list[str]:
    """Where a secret string appears in one of ``texts`` (name -> text), in any letter case;
    with ``scram``, also any SCRAM verifier (they are salted: none can be recomputed)."""
    folded = {name: text.casefold() for name, text in texts.items()}
    everything = "\n".join(folded.values())
    bad = []
    for value, what in secrets.items():
        needle = value.casefold()
        if needle in everything:
            names = [name for name, text in folded.items() if needle in text]
            bad.append(f"{what} appears in {', '.join(names)}")
    for name, text in texts.items():
        if scram and "SCRAM-SHA-256$" in text:
            bad.append(f"a SCRAM verifier appears in {name}")
    return bad
