"""Which login sets which password: the single user and alternating users strategies.

Single user: the login changes its own password, falling back to its previous password and
then to the master login when the current one is refused. Alternating users: the master keeps
``<user>`` and ``<user>_clone`` in turn; the login that applications hold now is never touched,
so it keeps working through the whole rotation. The clone mirrors the original at every
rotation. Clone naming follows AWS's rotation functions, so a secret can move between them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from rotd.credentials import Credentials
from rotd.engines import Endpoint, Login, Session
from rotd.errors import Category, DatabaseError
from rotd.inventory import Strategy

CLONE_SUFFIX = "_clone"

Connect = Callable[[Login], AbstractAsyncContextManager[Session]]
ReadCredentials = Callable[[], Awaitable[Credentials | None]]


def pending_username(strategy: Strategy, current: str) -> str:
    """The username the next version holds: the same, or the other of the alternating pair."""
    if strategy is Strategy.SINGLE_USER:
        return current
    if current.endswith(CLONE_SUFFIX):
        return current.removesuffix(CLONE_SUFFIX)
    return current + CLONE_SUFFIX


def login(endpoint: Endpoint, credentials: Credentials) -> Login:
    return Login(endpoint, credentials.username, credentials.password)


async def set_single_user(
    connect: Connect,
    endpoint: Endpoint,
    current: Credentials,
    pending: Credentials,
    read_previous: ReadCredentials,
    master: Credentials | None,
) -> str:
    """Give the user its pending password, as itself if possible; return which login did it."""
    refused: DatabaseError | None = None
    for label, source in (("current", current), ("previous", None)):
        if source is None:
            source = await read_previous()
            if source is None or source.username != current.username:
                continue
        try:
            async with connect(login(endpoint, source)) as session:
                await session.set_own_password(pending.password)
                return label
        except DatabaseError as exc:
            if exc.category is not Category.AUTH:
                raise
            refused = exc
    if master is not None:
        async with connect(Login(endpoint, master.username, master.password)) as session:
            await session.set_password(current.username, pending.password)
            return "master"
    assert refused is not None
    raise DatabaseError(
        endpoint.host,
        endpoint.port,
        Category.AUTH,
        f"login refused for user {current.username!r} with both its current and previous "
        "passwords, and no master secret applies (set master_secret to let the master reset it)",
    )


async def set_alternating(
    connect: Connect,
    endpoint: Endpoint,
    current: Credentials,
    pending: Credentials,
    master: Session,
) -> None:
    """Give the other user of the pair the pending password, through the master's session."""
    # The login applications hold must work before anything changes: a rotation that moves
    # AWSCURRENT away from a broken login would hide the breakage until it is too late.
    try:
        async with connect(login(endpoint, current)):
            pass
    except DatabaseError as exc:
        if exc.category is Category.AUTH:
            raise DatabaseError(
                endpoint.host,
                endpoint.port,
                Category.AUTH,
                f"login refused for user {current.username!r} with the AWSCURRENT password; "
                "fix the secret or the user before rotating",
            ) from None
        raise
    if pending.username == current.username + CLONE_SUFFIX:
        await master.mirror_user(current.username, pending.username, pending.password)
    else:
        await master.set_password(pending.username, pending.password)
