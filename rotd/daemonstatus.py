"""The running daemon's live state: the ``GET /status`` document, and reading it back.

The document says what an operator woken at night asks first: for every secret, when it is
next due and when rotd will next act on it, the last rotation's outcome and attempt, a
rotation in flight with its current step, a retry scheduled, a problem that parked it; the
rotations in flight, the retries, the parked secrets and the hosts whose breaker is open, each
listed apart; and the inventory in use, with its path and when it was loaded. It holds no
secret value: no password is ever kept by the daemon, and the whole document is scrubbed
before it is served all the same.

``rotd status --daemon URL`` reads it with :func:`fetch` and prints it with the table of
``rotd status`` (:func:`reports`), without calling Secrets Manager.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from rotd.errors import Category, RotdError
from rotd.inventory import SecretSpec
from rotd.observability import SecretStatus

if TYPE_CHECKING:
    from rotd.daemon import Daemon
    from rotd.protocol import Outcome
    from rotd.runner import InFlight
    from rotd.status import SecretReport

VERSION = 1
FETCH_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class LastRun:
    """How a secret's last rotation attempt ended."""

    outcome: str  # succeeded, resumed, skipped or failed
    at: datetime
    attempt: int
    duration_s: float
    step: str | None = None  # where it failed
    category: str | None = None
    error: str | None = None

    @classmethod
    def of(cls, outcome: Outcome, attempt: int, at: datetime) -> LastRun:
        error = outcome.error
        return cls(
            outcome=outcome.label,
            at=at,
            attempt=attempt,
            duration_s=outcome.duration_s,
            step=str(error.step) if error is not None else None,
            category=str(error.category) if error is not None else None,
            error=error.reason if error is not None else None,
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "at": _iso(self.at)}


class Tracked(Protocol):
    """What the daemon keeps of one secret, as this module reads it."""

    spec: SecretSpec
    status: SecretStatus
    last_rotated: datetime | None
    failures: int
    parked: bool
    username: str | None
    engine: str | None
    unfinished: str | None
    last: LastRun | None
    problem_reason: str | None
    retry_at: datetime | None


def document(
    daemon: Daemon,
    *,
    secrets: Sequence[Tracked],
    rotating: Mapping[str, InFlight],
    breakers: Sequence[tuple[str, int, float, str]],
    jobs: Mapping[str, datetime],
    now: datetime,
) -> dict[str, Any]:
    """The ``/status`` document (docs/monitoring.md describes each field)."""
    in_flight = [_in_flight(flight, now) for flight in rotating.values()]
    rows = [_secret(s, rotating.get(s.spec.id), jobs.get(s.spec.id), now) for s in secrets]
    return {
        "version": VERSION,
        "now": _iso(now),
        "daemon": {
            "started_at": _iso(daemon.started_at),
            "healthy": daemon.health_problem() is None,
            "health_problem": daemon.health_problem(),
            "summary": daemon.status_line(),
            "counts": dict(daemon.counts),
        },
        "inventory": {
            "path": str(daemon.inventory.path),
            "loaded_at": _iso(daemon.inventory_loaded),
            "secrets": len(secrets),
        },
        "secrets": rows,
        "in_flight": in_flight,
        "retries": [
            {
                "secret_id": row["secret_id"],
                "database": row["database"],
                "at": row["retry_at"],
                "failures": row["consecutive_failures"],
                "category": (row["last_outcome"] or {}).get("category"),
            }
            for row in rows
            if row["retry_at"] is not None
        ],
        "parked": [
            {
                "secret_id": row["secret_id"],
                "database": row["database"],
                **row["problem"],
                "next_attempt": row["next_run"],
            }
            for row in rows
            if row["parked"]
        ],
        "breakers": [
            {
                "host": host,
                "failures": failures,
                "next_probe": _iso(datetime.fromtimestamp(probe, UTC)),
                "reason": reason,
            }
            for host, failures, probe, reason in breakers
        ],
    }


def _secret(
    secret: Tracked, flight: InFlight | None, next_run: datetime | None, now: datetime
) -> dict[str, Any]:
    spec, status = secret.spec, secret.status
    age = (now - secret.last_rotated).total_seconds() if secret.last_rotated else None
    problem = None
    if status.problem is not None:
        problem = {"category": status.problem, "reason": secret.problem_reason}
    return {
        "secret_id": spec.id,
        "database": spec.database,
        "account": spec.aws.account or "base",
        "region": spec.aws.region,
        "strategy": str(spec.strategy),
        # bridge: Secrets Manager's schedule starts its rotations, so rotd has no due time.
        "rotation": str(spec.rotation),
        "engine": secret.engine,
        "username": secret.username,
        "last_rotated": _iso(secret.last_rotated),
        "next_due": None if spec.bridged else _iso_ts(status.next_due),
        "next_run": _iso(next_run),
        "credential_age_s": round(age, 1) if age is not None else None,
        "max_age_s": status.max_age,
        "overdue": age is not None and status.max_age is not None and age > status.max_age,
        "consecutive_failures": secret.failures,
        "last_outcome": secret.last.as_dict() if secret.last is not None else None,
        "retry_at": _iso(secret.retry_at),
        "parked": secret.parked,
        "problem": problem,
        "unfinished": secret.unfinished,
        "rotating": _in_flight(flight, now) if flight is not None else None,
    }


def _in_flight(flight: InFlight, now: datetime) -> dict[str, Any]:
    return {
        "secret_id": flight.spec.id,
        "database": flight.spec.database,
        "step": flight.progress.step,
        "version_id": flight.progress.version_id,
        "attempt": flight.attempt,
        "started_at": _iso_ts(flight.started),
        "running_s": round(max(0.0, now.timestamp() - flight.started), 1),
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment is not None else None


def _iso_ts(timestamp: float | None) -> str | None:
    return _iso(datetime.fromtimestamp(timestamp, UTC)) if timestamp is not None else None


# --- reading it back: rotd status --daemon ------------------------------------------------------


class DaemonUnreachable(RotdError):
    """``/status`` could not be read from the daemon at ``url``."""

    category = Category.UNREACHABLE

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(
            f"cannot read the daemon's status at {url}: {reason}; is `rotd run` running there, "
            "with daemon.listen set to that address? (`systemctl status rotd` tells)"
        )


def status_url(url: str) -> str:
    """``url`` as given (``http://host:port``, with or without ``/status``), made the
    ``/status`` endpoint's address."""
    if "://" not in url:
        url = f"http://{url}"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise DaemonUnreachable(url, "the daemon answers on http://HOST:PORT (daemon.listen)")
    path = parts.path.rstrip("/")
    if not path.endswith("/status"):
        path = f"{path}/status"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def fetch(url: str, timeout_s: float = FETCH_TIMEOUT_S) -> dict[str, Any]:
    """The daemon's ``/status`` document; raises :class:`DaemonUnreachable`."""
    address = status_url(url)
    try:
        # http(s) only: status_url refuses other schemes.
        with urllib.request.urlopen(address, timeout=timeout_s) as response:  # noqa: S310
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise DaemonUnreachable(address, f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise DaemonUnreachable(address, str(reason)) from None
    try:
        loaded = json.loads(body)
    except ValueError:
        raise DaemonUnreachable(address, "the answer is not JSON: is that rotd?") from None
    if not isinstance(loaded, dict) or loaded.get("version") != VERSION:
        raise DaemonUnreachable(address, f"not a rotd status document of version {VERSION}")
    return loaded


def reports(status: Mapping[str, Any]) -> list[SecretReport]:
    """One ``rotd status`` row per secret of the document, in inventory order, with what the
    daemon is doing about it (rotating, retrying) as the row's activity."""
    from rotd.status import SecretReport

    rows = []
    for row in status["secrets"]:
        problem = row["problem"]
        rows.append(
            SecretReport(
                secret_id=row["secret_id"],
                database=row["database"],
                account=row.get("account") or "base",
                region=row.get("region"),
                strategy=row["strategy"],
                rotation=row.get("rotation") or "daemon",
                engine=row["engine"],
                username=row["username"],
                last_rotated=row["last_rotated"],
                next_due=row["next_due"],
                unfinished=row["unfinished"],
                problem=f"{problem['category']}: {problem['reason']}" if problem else None,
                activity=_activity(row),
            )
        )
    return rows


def _activity(row: Mapping[str, Any]) -> str | None:
    flight = row["rotating"]
    if flight is not None:
        return (
            f"rotating: {flight['step']} since {flight['started_at']} (attempt {flight['attempt']})"
        )
    last = row["last_outcome"]
    if row["retry_at"] is not None:
        failed = f": {last['category']} at {last['step']}" if last and last["category"] else ""
        return f"retry at {row['retry_at']} after {row['consecutive_failures']} failure(s){failed}"
    if row["overdue"]:
        days = row["max_age_s"] / 86400
        return f"OVERDUE: credential older than its schedule and window allow ({days:g} days)"
    return None
