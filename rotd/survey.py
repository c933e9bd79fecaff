"""What every secret looks like at start and on reload, read in batches.

Planning a secret needs its description (versions and labels, native rotation) and the value of
its AWSCURRENT version. Read one secret at a time that is two calls per secret; a
:class:`Survey` reads them for many secrets at once, for each account, region and identity
(:class:`rotd.accounts.Stores`) that plans at least :data:`FEWEST` secrets: ``ListSecrets``
(100 secrets a page, filtered on the longest name prefix that each 100 of the sorted names
share) for the descriptions, and ``BatchGetSecretValue`` (20 secrets a call,
:data:`BATCH_CONCURRENCY` calls in flight per store) for the values, as the pages arrive. Both
are paced per account and region by the store, and retried by botocore's adaptive mode.

What it hands back is only a head start: the daemon builds each secret's
:class:`rotd.protocol.Inspection` with :func:`rotd.protocol.inspection_of`, the same code that
``inspect`` uses, which reads alone whatever the batch did not settle (a value missing or of
another version than the listed AWSCURRENT, an unfinished rotation's pending value). A secret
the listing did not find, and every secret of a store whose identity may not list, is read
alone as before. A refused batch read is said once per permission and store
(``startup.batch_reads_denied``); other failures of a batch read only cost the head start.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from rotd.accounts import Stores
from rotd.errors import Category, StoreError
from rotd.inventory import AwsAccess, SecretSpec
from rotd.observability import get_logger
from rotd.secretstore import AwsSecretStore, SecretDescription, SecretValue

log = get_logger("rotd.survey")

# Below this many secrets in one store, reading each alone costs about as many calls.
FEWEST = 5
BATCH = 20  # BatchGetSecretValue's most secrets per call
BATCH_CONCURRENCY = 8  # batch calls in flight per store
PAGE = 100  # ListSecrets' most secrets per page
_PERMISSIONS = {
    "list_secrets": "secretsmanager:ListSecrets",
    "batch_get_secret_value": "secretsmanager:BatchGetSecretValue",
}


@dataclass(frozen=True)
class Known:
    """What the batch reads found of one secret: its description, and its AWSCURRENT value
    when the batch returned one (possibly of another version: check before use)."""

    description: SecretDescription
    value: SecretValue | None = None


def shared_prefix(names: Sequence[str]) -> str:
    """The longest prefix of every name (ListSecrets' name filter matches prefixes)."""
    first, last = min(names, default=""), max(names, default="")
    size = 0
    while size < len(first) and first[size] == last[size]:
        size += 1
    return first[:size]


class Survey:
    """Batch reads over :class:`Stores`; one per daemon, so that a refusal is said once."""

    def __init__(self, stores: Stores) -> None:
        self._stores = stores
        self._said: set[tuple[str, AwsAccess]] = set()

    async def read(self, specs: Iterable[SecretSpec]) -> dict[str, Known]:
        """What the batch reads found, by secret id; a secret they did not find is absent."""
        found: dict[str, Known] = {}
        await self.stream(specs, found.__setitem__)
        return found

    async def stream(
        self, specs: Iterable[SecretSpec], deliver: Callable[[str, Known], None]
    ) -> None:
        """Hand each secret the batch reads found to ``deliver`` (its id, what was found) as
        soon as its batch is read, so that no more than a few batches are held at once."""
        groups: dict[AwsAccess, list[SecretSpec]] = {}
        for spec in specs:
            groups.setdefault(self._stores.access_of(spec.id), []).append(spec)
        readers = [
            self._read_store(access, group, deliver)
            for access, group in groups.items()
            if len(group) >= FEWEST
        ]
        await asyncio.gather(*readers)

    async def _read_store(
        self, access: AwsAccess, specs: list[SecretSpec], deliver: Callable[[str, Known], None]
    ) -> None:
        found: set[str] = set()  # listed
        counts = {"with_value": 0}

        def delivered(secret_id: str, known: Known) -> None:
            counts["with_value"] += known.value is not None
            deliver(secret_id, known)

        # By id: a name matches a listed secret's name, an ARN its ARN (only: a secret of
        # another account may have the name of one listed here).
        wanted = {spec.id: spec for spec in specs}
        listed: list[tuple[SecretSpec, SecretDescription]] = []
        batches: list[asyncio.Task[None]] = []
        slots = asyncio.Semaphore(BATCH_CONCURRENCY)
        denied = False
        try:
            store = await self._stores.store_for(access)
            # A page's worth of names at a time, filtered on the prefix they share: a page
            # lists about those, where one prefix of every name may list far more secrets.
            # A prefix that others share too costs pages: never more than twice the least.
            by_name = sorted(specs, key=lambda spec: spec.name)
            budget = 2 * math.ceil(len(specs) / PAGE) + 2
            for start in range(0, len(by_name), PAGE):
                part = by_name[start : start + PAGE]
                if budget <= 0 or all(spec.id in found for spec in part):
                    continue
                prefix = shared_prefix([spec.name for spec in part])
                filters = [prefix] if prefix else []
                async for page in store.list_descriptions(filters, max_pages=budget):
                    budget -= 1
                    for description in page:
                        match = wanted.get(description.arn) or wanted.get(description.name)
                        if match is not None and match.id not in found:
                            found.add(match.id)
                            listed.append((match, description))
                    while len(listed) >= BATCH:
                        chunk, listed = listed[:BATCH], listed[BATCH:]
                        task = asyncio.create_task(self._values(store, chunk, delivered, slots))
                        batches.append(task)
            if listed:
                batches.append(asyncio.create_task(self._values(store, listed, delivered, slots)))
        except StoreError as exc:
            denied = self._failed(access, exc)
        finally:
            results = await asyncio.gather(*batches, return_exceptions=True)
        for result in results:
            if isinstance(result, StoreError) and not denied:
                denied = self._failed(access, result)
            elif isinstance(result, BaseException):
                raise result
        log.info(
            "startup.batch_read",
            account=access.account or "base",
            region=access.region or "",
            secrets=len(specs),
            listed=len(found),
            with_value=counts["with_value"],
        )

    async def _values(
        self,
        store: AwsSecretStore,
        chunk: Sequence[tuple[SecretSpec, SecretDescription]],
        deliver: Callable[[str, Known], None],
        slots: asyncio.Semaphore,
    ) -> None:
        """Read the values of ``chunk`` and deliver each secret; without its value when the
        batch failed (its description still saves a call)."""
        try:
            async with slots:
                values = await store.current_values([d.arn for _, d in chunk])
        except StoreError:
            for spec, description in chunk:
                deliver(spec.id, Known(description))
            raise
        by_arn = {value.arn: value for value in values}
        for spec, description in chunk:
            deliver(spec.id, Known(description, by_arn.get(description.arn)))

    def _failed(self, access: AwsAccess, exc: StoreError) -> bool:
        """Say why a batch read failed (a refusal once per store and permission); True for a
        refusal."""
        permission = _PERMISSIONS.get(exc.operation, exc.operation)
        if exc.category is not Category.PERMISSION:
            log.warning(
                "startup.batch_reads_failed",
                account=access.account or "base",
                region=access.region or "",
                operation=exc.operation,
                category=str(exc.category),
                error=exc.reason,
                action="nothing to do: the secrets it did not read are read one by one",
            )
            return False
        if (permission, access) not in self._said:
            self._said.add((permission, access))
            log.warning(
                "startup.batch_reads_denied",
                account=access.account or "base",
                region=access.region or "",
                permission=permission,
                error=exc.reason,
                action=f'allow {permission} (resource "*" for ListSecrets) to the identity '
                "rotd uses here: without it rotd reads each secret alone, two calls per secret "
                "at start and on reload (docs/iam-policy.md)",
            )
        return True
