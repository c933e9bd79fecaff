"""Secrets in several AWS accounts and regions behind one :class:`SecretStore`.

Each database of the inventory says, in its ``aws:`` block, where its secrets live and as
whom rotd reaches them (:class:`rotd.inventory.AwsAccess`). :class:`Stores` opens one
:class:`AwsSecretStore` per distinct account, region and identity on first use and sends each
call to the store of the secret it names, so the protocol, the runner and hooks keep speaking
of secrets only. Stores of one account and region share one write limiter: Secrets Manager
counts its write quota per account and region, so ``aws.max_write_tps`` applies to each pair
and two accounts never wait on each other; their batch reads (:mod:`rotd.survey`) share one
read limiter the same way.

A master secret resolves where its database's secrets live; a master named by an ARN in
another region is read in that region, and one in another account with the role the inventory
gives that account (the inventory refuses a master no role reaches).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextlib import AsyncExitStack
from types import TracebackType

from rotd.inventory import AwsAccess, Inventory, secret_location
from rotd.secretstore import (
    AwsConnection,
    AwsSecretStore,
    RateLimit,
    SecretDescription,
    SecretValue,
    batch_read_limits,
    connection_for,
)

# Who a write limiter is for: an account (the role's, or the base identity's profile and
# endpoint, which name one account), and a region.
_LimitKey = tuple[str, str | None]


def _by_account(inventory: Inventory) -> dict[str, AwsAccess]:
    """The first role of the inventory in each account it reaches through a role."""
    found: dict[str, AwsAccess] = {}
    for access in inventory.accesses:
        if access.account is not None:
            found.setdefault(access.account, access)
    return found


def routes(inventory: Inventory) -> dict[str, AwsAccess]:
    """Where each secret and master of ``inventory`` lives, by every id rotd calls it by."""
    by_account = _by_account(inventory)
    found: dict[str, AwsAccess] = {}
    for spec in inventory.secrets:
        found[spec.id] = found[spec.name] = spec.aws
    for spec in inventory.secrets:
        master = spec.master_secret
        if master is not None and master not in found:
            found[master] = master_access(master, spec.aws, by_account)
    return found


def master_access(
    master: str, database: AwsAccess, by_account: Mapping[str, AwsAccess]
) -> AwsAccess:
    """Where ``master`` is read for a database reached through ``database``: there, unless its
    ARN names another region (read there, as the same identity) or another account (read as
    the inventory's role in that account)."""
    located = secret_location(master)
    if located is None:
        return database
    account, region = located
    if database.account == account:
        return database.in_region(region)
    # Another account: its role if the inventory has one, else the same identity (a resource
    # policy on the master may allow that; the inventory refuses it for a role's database).
    return by_account.get(account, database).in_region(region)


def limit_key(access: AwsAccess) -> _LimitKey:
    account = access.account or f"base:{access.profile or ''}@{access.endpoint_url or ''}"
    return account, access.region


class Stores:
    """A :class:`SecretStore` over every account and region of the inventory.

    Use as ``async with Stores(inventory) as store``; :meth:`update` takes a reloaded
    inventory's routes (stores already open stay open).
    """

    def __init__(self, inventory: Inventory, connection: AwsConnection | None = None) -> None:
        self._connection = connection or connection_for(inventory)
        self._default = self._connection.access
        self._routes = routes(inventory)
        self._by_account = _by_account(inventory)
        self._stores: dict[AwsAccess, AwsSecretStore] = {}
        self._limits: dict[_LimitKey, RateLimit] = {}
        self._read_limits: dict[_LimitKey, dict[str, RateLimit]] = {}
        self._stack = AsyncExitStack()
        self._lock = asyncio.Lock()
        self._keep = False

    async def __aenter__(self) -> Stores:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    def update(self, inventory: Inventory) -> None:
        self._routes = routes(inventory)
        self._by_account = _by_account(inventory)

    def access_of(self, secret_id: str) -> AwsAccess:
        """The account, region and identity ``secret_id`` is reached with."""
        access = self._routes.get(secret_id)
        if access is not None:
            return access
        # An id the inventory does not name: a secret's masterarn, read at rotation time.
        return master_access(secret_id, self._default, self._by_account)

    def keep_versions(self) -> None:
        """See :meth:`AwsSecretStore.keep_versions`; applies to every store."""
        self._keep = True
        for store in self._stores.values():
            store.keep_versions()

    @property
    def calls(self) -> dict[str, int]:
        """Secrets Manager calls by operation, over every account and region."""
        total: dict[str, int] = {}
        for store in self._stores.values():
            for name, count in store.calls.items():
                total[name] = total.get(name, 0) + count
        return total

    async def store_for(self, access: AwsAccess) -> AwsSecretStore:
        """The store of ``access``, opened on first use."""
        store = self._stores.get(access)
        if store is not None:
            return store
        async with self._lock:
            store = self._stores.get(access)
            if store is None:
                connection = self._connection.to(access)
                key = limit_key(access)
                writes = self._limits.setdefault(key, RateLimit(connection.max_write_tps))
                reads = self._read_limits.setdefault(key, batch_read_limits())
                store = AwsSecretStore(connection, writes=writes, reads=reads)
                await self._stack.enter_async_context(store)
                if self._keep:
                    store.keep_versions()
                self._stores[access] = store
        return store

    async def _of(self, secret_id: str) -> AwsSecretStore:
        return await self.store_for(self.access_of(secret_id))

    async def describe(self, secret_id: str) -> SecretDescription:
        return await (await self._of(secret_id)).describe(secret_id)

    async def get_value(
        self, secret_id: str, *, version_id: str | None = None, stage: str | None = None
    ) -> SecretValue:
        store = await self._of(secret_id)
        return await store.get_value(secret_id, version_id=version_id, stage=stage)

    async def put_pending(self, secret_id: str, token: str, string: str) -> bool:
        return await (await self._of(secret_id)).put_pending(secret_id, token, string)

    async def move_current(self, secret_id: str, token: str, from_version: str) -> None:
        await (await self._of(secret_id)).move_current(secret_id, token, from_version)

    async def remove_stage(self, secret_id: str, stage: str, version_id: str) -> None:
        await (await self._of(secret_id)).remove_stage(secret_id, stage, version_id)

    async def unlabelled_versions(self, secret_id: str) -> list[str]:
        return await (await self._of(secret_id)).unlabelled_versions(secret_id)

    async def move_stage(
        self, secret_id: str, stage: str, to_version: str, from_version: str | None
    ) -> None:
        store = await self._of(secret_id)
        await store.move_stage(secret_id, stage, to_version, from_version)

    async def tag(self, secret_id: str, key: str, value: str) -> None:
        await (await self._of(secret_id)).tag(secret_id, key, value)

    async def untag(self, secret_id: str, key: str) -> None:
        await (await self._of(secret_id)).untag(secret_id, key)

    async def start_rotation(self, secret_id: str) -> str:
        return await (await self._of(secret_id)).start_rotation(secret_id)
