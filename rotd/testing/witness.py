"""An application that logs in with whatever AWSCURRENT holds, nonstop, during rotations.

It reads the secret from Secrets Manager itself (always naming the stage) and logs in through
the target's own ``logs_in``. A refused login counts only once confirmed: the witness then
tries AWSPENDING and reads AWSCURRENT again. If AWSCURRENT moved meanwhile the refusal proves
nothing (``stale``). Otherwise it is real: ``window`` when AWSPENDING logged in (the database
holds the pending password and AWSCURRENT has not moved yet: the span between setSecret and
finishSecret of a single-user rotation, which an engine with ``several_passwords`` does not
have), ``refused`` when no label logged in, which no strategy may ever allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from rotd.testing.target import Target


@dataclass
class Witness:
    target: Target
    client: Any  # an aioboto3 Secrets Manager client
    secret_id: str
    interval_s: float = 0.02
    logins: int = 0
    accepted: int = 0
    stale: int = 0
    window: int = 0
    refused: int = 0
    first_accepted: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._once()
            # A login cadence, not a wait for some state.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    async def _read(self, stage: str) -> tuple[str, dict[str, Any]] | None:
        try:
            got = await self.client.get_secret_value(SecretId=self.secret_id, VersionStage=stage)
        except self.client.exceptions.ResourceNotFoundException:
            return None
        return str(got["VersionId"]), json.loads(got["SecretString"])

    async def _logs_in(self, value: dict[str, Any]) -> bool:
        self.logins += 1
        return await self.target.logs_in(value["username"], value["password"])

    async def _once(self) -> None:
        current = await self._read("AWSCURRENT")
        assert current is not None, "the secret has no AWSCURRENT"
        if await self._logs_in(current[1]):
            self.accepted += 1
            self.first_accepted.set()
            return
        pending = await self._read("AWSPENDING")
        pending_ok = (
            pending is not None and pending[0] != current[0] and await self._logs_in(pending[1])
        )
        again = await self._read("AWSCURRENT")
        if again is None or again[0] != current[0]:
            self.stale += 1
        elif pending_ok:
            self.window += 1
        else:
            self.refused += 1
