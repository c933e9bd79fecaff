"""Which login sets which password: the single user and alternating users strategies.

Single user: the login changes its own password, logging in with its current password, then
its previous one; when the database already holds the pending password, there is nothing left
to set; the master login is the last resort. On an engine whose users hold several passwords
(capability ``several_passwords``) single user has no window: the pending password is added
beside AWSCURRENT's and AWSPREVIOUS's, and the oldest removed once the labels have moved; the
master, when there is one, does it first, since an application login rarely may.
Alternating users: the master keeps ``<user>`` and ``<user>_clone`` in turn; the login
applications hold now is never touched, so it keeps working through the whole rotation. The
clone mirrors the original at every rotation. Clone naming follows AWS's rotation functions,
so a secret can move between them and rotd.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager

from rotd.credentials import Credentials
from rotd.engines import Endpoint, Login, Session, SeveralPasswords, SeveralPasswordsHere
from rotd.errors import Category, DatabaseError, EngineError
from rotd.inventory import Strategy

CLONE_SUFFIX = "_clone"

Connect = Callable[[Login], AbstractAsyncContextManager[Session]]
Open = Callable[[Login], Awaitable[Session]]
Candidate = tuple[str, Callable[[], Awaitable[Credentials | None]]]

# How single_user got its session, and so what setSecret still has to do.
OWN = ("current", "previous")
PENDING = "pending"
MASTER = "master"


def pending_username(strategy: Strategy, current: str) -> str:
    """The username the next version holds: the same, or the other of the alternating pair."""
    if strategy is Strategy.SINGLE_USER:
        return current
    if current.endswith(CLONE_SUFFIX):
        return current.removesuffix(CLONE_SUFFIX)
    return current + CLONE_SUFFIX


def login(endpoint: Endpoint, credentials: Credentials) -> Login:
    """The login ``credentials`` hold at ``endpoint``, with the whole secret JSON."""
    return Login(endpoint, credentials.username, credentials.password, credentials.document)


async def first_login(
    open_session: Open, endpoint: Endpoint, username: str, candidates: Sequence[Candidate]
) -> tuple[str, Session]:
    """A session as the first candidate login the server accepts, and that candidate's label.

    Candidates that yield no credentials are passed over; any failure but a refused login
    stops the search, since it would fail the same way for the others.
    """
    refused: list[str] = []
    for label, read in candidates:
        credentials = await read()
        if credentials is None:
            continue
        try:
            return label, await open_session(login(endpoint, credentials))
        except DatabaseError as exc:
            if exc.category is not Category.AUTH:
                raise
            refused.append(f"{label} ({credentials.username!r})")
    tried = ", ".join(refused) or "none"
    raise DatabaseError(
        endpoint.host,
        endpoint.port,
        Category.AUTH,
        f"login refused for user {username!r} with every password rotd knows (tried: {tried}); "
        "fix the secret or set master_secret so that the master can reset it",
    )


async def set_single_user(session: Session, how: str, username: str, new_password: str) -> None:
    """Give the user its pending password through the session ``first_login`` opened."""
    if how in OWN:
        await session.set_own_password(new_password)
    elif how == MASTER:
        await session.set_password(username, new_password)
    # PENDING: the database already holds the pending password.


async def keeps_several_here(session: Session, username: str) -> bool:
    """Whether ``username`` may hold several passwords through this session, on an engine that
    knows it only once connected (MySQL 8.0.14+ with the privilege; see
    :class:`SeveralPasswordsHere`). Otherwise single user replaces the password, as before."""
    if not (isinstance(session, SeveralPasswordsHere) and isinstance(session, SeveralPasswords)):
        return False
    verdict = await session.may_keep_several_passwords(username)
    return verdict is not None and verdict.granted


async def add_pending(
    session: Session, current: Credentials, pending: Credentials, previous: Credentials | None
) -> None:
    """setSecret of single_user on an engine whose users hold several passwords (capability
    ``several_passwords``): the user keeps AWSCURRENT's and AWSPREVIOUS's passwords and gains
    the pending one, so no application is refused at any instant. Any other password (one
    older than AWSPREVIOUS, left by a rotation cut after finishSecret) is removed in the same
    change: the user never holds more than three, and a resumed rotation converges."""
    kept = [pending, current] + ([previous] if previous is not None else [])
    await keep_passwords(session, current.username, kept)


async def keep_passwords(session: Session, username: str, kept: Sequence[Credentials]) -> None:
    """Make the passwords of ``kept`` (newest first) exactly those ``username`` logs in with."""
    if not isinstance(session, SeveralPasswords):
        raise EngineError(
            type(session).__name__, "declares several_passwords but has no set_passwords"
        )
    await session.set_passwords(username, [c.password for c in kept if c.username == username])


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
