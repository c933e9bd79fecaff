"""Which secrets of an inventory hold the same database login, found from their contents.

A login is an account on a server: the host and port rotd reaches (the
inventory's route when it sets one, else the secret's own address: the server whose password a
rotation changes) and the username, compared exactly as the servers store it. A secret rotated
with alternating users holds both users of its pair (``app`` and ``app_clone``). Two secrets
that hold one login break each other: rotating one changes the password the other's
AWSCURRENT holds, and rotated at once one of them fails midway. rotd finds such pairs before it
changes anything and rotates neither. A secret that is another's master is not a pair, unless
both hold the same user; two ids naming one secret (its name and its ARN) are one secret.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rotd.credentials import BadSecret, Credentials
from rotd.engines import Endpoint
from rotd.errors import StoreError
from rotd.inventory import SecretSpec, Strategy
from rotd.protocol import endpoint_for
from rotd.secretstore import CURRENT, SecretStore
from rotd.strategies import pending_username

READ_CONCURRENCY = 32
FIX = "give each secret a database user of its own, or take all but one out of the inventory"

# One server listens at one address, whatever engine name a secret gives it.
Account = tuple[str, int, str]  # host (lower case), port, username


@dataclass(frozen=True)
class Claim:
    """The logins one secret holds: one user, or both users of an alternating pair."""

    arn: str
    host: str
    port: int
    usernames: tuple[str, ...]

    def accounts(self) -> list[Account]:
        return [(self.host, self.port, user) for user in self.usernames]


def claim_of(spec: SecretSpec, arn: str, endpoint: Endpoint, username: str) -> Claim:
    """What ``spec`` holds when its AWSCURRENT user is ``username``, reached at ``endpoint``."""
    users = [username]
    if spec.strategy is Strategy.ALTERNATING_USERS:
        users.append(pending_username(spec.strategy, username))
    # Host names are not case-sensitive; a name and an address of one server are not matched.
    return Claim(arn, endpoint.host.lower(), endpoint.port, tuple(users))


def claim_from(spec: SecretSpec, arn: str, credentials: Credentials) -> Claim:
    return claim_of(spec, arn, endpoint_for(spec, credentials), credentials.username)


@dataclass(frozen=True)
class SharedLogin:
    """A secret that holds a login another secret of the inventory holds too."""

    secret_id: str
    others: tuple[str, ...]
    username: str
    address: str

    @property
    def problem(self) -> str:
        others = " and ".join(repr(other) for other in self.others)
        return (
            f"secrets {self.secret_id!r} and {others} hold the same login {self.username!r} "
            f"at {self.address}: rotating one would change the password the other's "
            "AWSCURRENT holds, so rotd rotates neither"
        )

    @property
    def reason(self) -> str:
        return f"{self.problem}; {FIX}"


def find_shared(claims: Mapping[str, Claim]) -> dict[str, SharedLogin]:
    """Every secret of ``claims`` (by id) that holds a login another one holds too."""
    holders: dict[Account, list[str]] = {}
    for secret_id, claim in claims.items():
        for account in claim.accounts():
            holders.setdefault(account, []).append(secret_id)
    shared: dict[str, SharedLogin] = {}
    for (host, port, username), ids in holders.items():
        for secret_id in ids:
            arn = claims[secret_id].arn
            others = [other for other in ids if claims[other].arn != arn]
            if not others:
                continue
            found = shared.get(secret_id)
            if found is None:
                shared[secret_id] = SharedLogin(
                    secret_id, tuple(others), username, f"{host}:{port}"
                )
            else:
                more = tuple(o for o in others if o not in found.others)
                shared[secret_id] = SharedLogin(
                    secret_id, found.others + more, found.username, found.address
                )
    return shared


async def read_claims(specs: Iterable[SecretSpec], store: SecretStore) -> dict[str, Claim]:
    """Each secret's claim from its AWSCURRENT value. A secret that cannot be read or parsed
    has none: its own rotation fails and says why."""
    slots = asyncio.Semaphore(READ_CONCURRENCY)

    async def read(spec: SecretSpec) -> Claim | None:
        async with slots:
            try:
                value = await store.get_value(spec.id, stage=CURRENT)
                return claim_from(
                    spec, value.arn, Credentials.parse(value.string, engine=spec.engine)
                )
            except (StoreError, BadSecret):
                return None

    chosen = list(specs)
    claims = await asyncio.gather(*(read(spec) for spec in chosen))
    return {spec.id: claim for spec, claim in zip(chosen, claims, strict=True) if claim}


async def shared_logins(specs: Iterable[SecretSpec], store: SecretStore) -> dict[str, SharedLogin]:
    """The secrets of ``specs`` that hold a login another of ``specs`` holds too."""
    return find_shared(await read_claims(specs, store))
