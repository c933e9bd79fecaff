"""The kit's hands on one test: secrets in Secrets Manager, logins on the target, rotd's runner.

A :class:`Kit` creates logins and their secrets with unique names (removed at the end), builds
one-secret inventories, rotates through rotd's real :class:`~rotd.runner.Runner` against the
real store (optionally with a fault at the engine's or the store's boundary), reads what
Secrets Manager holds, and renders every log line rotd emits through rotd's own processors,
so that a test can look for secrets in what an operator would see.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, MutableMapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, suppress
from typing import Any

import aioboto3
import structlog

from rotd import passwords, strategies
from rotd.credentials import Credentials
from rotd.engines import Capabilities, Engine, Settings, all_engines, capabilities
from rotd.inventory import Inventory
from rotd.observability import processors
from rotd.protocol import Outcome, endpoint_for
from rotd.runner import Runner
from rotd.secretstore import AwsConnection, AwsSecretStore, SecretStore
from rotd.testing.aws import AwsEndpoint
from rotd.testing.target import Target, kit_inventory

SINGLE = "single_user"
ALTERNATING = "alternating_users"
# A key of the kit's own in every secret: rotd must keep what it does not know.
KEPT_KEY = "rotd_kit_kept"


class Kit:
    def __init__(self, target: Target, aws: AwsEndpoint, client: Any, store: AwsSecretStore):
        self.target = target
        self.aws = aws
        self.client = client
        self.store = store
        self.engine: Engine = all_engines()[target.engine]
        # The engine's own settings from the target's database entry (exec:), as rotd reads them.
        self.settings: Settings = (
            self.inventory("rotd-kit/probe", SINGLE).secrets[0].engine_settings
        )
        self.prefix = f"rotd-kit/{uuid.uuid4().hex[:10]}"
        self.secrets: list[str] = []
        self.usernames: list[str] = []
        self.known_passwords: set[str] = set()
        self.lines: list[str] = []
        self.errors: list[str] = []

    @property
    def capabilities(self) -> Capabilities:
        """What the engine can do with the target's settings, as rotd asks it."""
        return capabilities(self.engine, self.settings)

    async def several_passwords(self, secret: str) -> bool:
        """Whether single user keeps ``secret``'s user logging in with AWSPREVIOUS too: the
        engine declares ``several_passwords``, or its session, once connected, says this
        server and login may (:class:`rotd.engines.SeveralPasswordsHere`)."""
        if self.capabilities.several_passwords:
            return True
        spec = self.inventory(secret, SINGLE).secrets[0]
        _, value = await self.value(secret, stage="AWSCURRENT")
        current = Credentials.parse(json.dumps(value), engine=spec.engine)
        login = strategies.login(endpoint_for(spec, current), current)
        async with self.engine.connect(login, timeout_s=10) as session:
            return await strategies.keeps_several_here(session, current.username)

    def declares(self, strategy: str) -> bool:
        caps = self.capabilities
        return caps.mirror_user if strategy == ALTERNATING else caps.single_user

    def password(self) -> str:
        made = passwords.generate(passwords.PasswordPolicy())
        self.known_passwords.add(made)
        return made

    def username(self, label: str = "u") -> str:
        name = f"rk{label}{uuid.uuid4().hex[:10]}"
        self.usernames.append(name)
        return name

    async def create_secret(self, username: str, password: str) -> str:
        name = f"{self.prefix}/{username}"
        value = {**self.target.secret(username, password), KEPT_KEY: "kept"}
        self.known_passwords.add(password)
        await self.client.create_secret(Name=name, SecretString=json.dumps(value))
        self.secrets.append(name)
        return name

    async def login(self) -> tuple[str, str, str]:
        """A new login on the target and its secret: (username, password, secret name)."""
        username, password = self.username(), self.password()
        await self.target.create_login(username, password)
        return username, password, await self.create_secret(username, password)

    async def master(self) -> str:
        """A new administrator on the target and its secret; the secret's name."""
        username, password = self.username("m"), self.password()
        await self.target.create_master(username, password)
        return await self.create_secret(username, password)

    def inventory(self, secret: str, strategy: str, master: str | None = None) -> Inventory:
        aws = {"endpoint_url": self.aws.endpoint_url, "region": self.aws.region}
        return kit_inventory(self.target, secret, strategy, master, aws)

    async def rotate(
        self,
        inventory: Inventory,
        *,
        engine: Engine | None = None,
        store: SecretStore | None = None,
    ) -> Outcome:
        """One rotation, as one rotd process (its own runner) would run it."""
        engines: Mapping[str, Engine] = {self.target.engine: engine or self.engine}
        runner = Runner(store or self.store, engines, max_concurrent=4, max_concurrent_per_host=4)
        (outcome,) = await runner.rotate_all(inventory.secrets)
        if outcome.error is not None:
            self.errors.append(str(outcome.error))
        return outcome

    async def value(
        self, secret: str, *, stage: str | None = None, version_id: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        asked: dict[str, str] = (
            {"VersionStage": stage} if stage else {"VersionId": version_id or ""}
        )
        got = await self.client.get_secret_value(SecretId=secret, **asked)
        value: dict[str, Any] = json.loads(got["SecretString"])
        self.known_passwords.add(str(value.get("password")))
        return str(got["VersionId"]), value

    async def stages(self, secret: str) -> dict[str, list[str]]:
        """Version id -> labels, for labelled versions."""
        described = await self.client.describe_secret(SecretId=secret)
        return {v: s for v, s in (described.get("VersionIdsToStages") or {}).items() if s}

    async def unfinished(self, secret: str) -> list[str]:
        """Versions holding AWSPENDING without AWSCURRENT: an unfinished rotation."""
        return [
            v
            for v, s in (await self.stages(secret)).items()
            if "AWSPENDING" in s and "AWSCURRENT" not in s
        ]

    async def history(self, secret: str) -> list[str]:
        """Every version with a value, labelled or not, and records their passwords."""
        listed = await self.client.list_secret_version_ids(SecretId=secret, IncludeDeprecated=True)
        found = []
        for entry in listed["Versions"]:
            with suppress(self.client.exceptions.ResourceNotFoundException):
                await self.value(secret, version_id=entry["VersionId"])
                found.append(str(entry["VersionId"]))
        return found

    async def logs_in(self, value: Mapping[str, Any]) -> bool:
        return await self.target.logs_in(value["username"], value["password"])

    async def has_access(self, value: Mapping[str, Any], thing: str) -> bool:
        return await self.target.has_access(value["username"], value["password"], thing)

    async def current_logs_in(self, secret: str) -> bool:
        return await self.logs_in((await self.value(secret, stage="AWSCURRENT"))[1])

    async def leaks(self) -> list[str]:
        """Where any password the kit saw appears in rendered log lines or error messages:
        "<where> holds a password", never the password itself."""
        for secret in self.secrets:
            await self.history(secret)
        found = []
        texts = [("a log line", line) for line in self.lines]
        texts += [("an error", error) for error in self.errors]
        for where, text in texts:
            if any(p and p in text for p in self.known_passwords):
                found.append(f"{where} holds a password: {_event_name(text)}")
        return found

    async def cleanup(self) -> None:
        for secret in self.secrets:
            with suppress(self.client.exceptions.ResourceNotFoundException):
                await self.client.delete_secret(SecretId=secret, ForceDeleteWithoutRecovery=True)
        for username in reversed(self.usernames):
            await self.target.drop_login(username + "_clone")
            await self.target.drop_login(username)


def _event_name(line: str) -> str:
    try:
        return str(json.loads(line).get("event"))
    except (ValueError, AttributeError):
        return "(not a log line)"


Sink = Callable[[Any, str, dict[str, Any]], None]


@contextmanager
def processed_events(sink: Sink) -> Iterator[None]:
    """Hand every structlog event, once through rotd's processors (redaction included), to
    ``sink(logger, method_name, event)`` instead of writing it, for as long as the block runs."""

    def keep(logger: Any, name: str, event: MutableMapping[str, Any]) -> str:
        sink(logger, name, dict(event))
        raise structlog.DropEvent

    previous = structlog.get_config()
    structlog.configure(
        processors=[*processors(), keep],
        wrapper_class=structlog.make_filtering_bound_logger(0),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.configure(**previous)


@contextmanager
def rendered_logs(lines: list[str]) -> Iterator[None]:
    """Render every structlog event through rotd's processors (redaction included) as JSON
    text into ``lines``, for as long as the block runs."""
    with processed_events(
        lambda _logger, _name, event: lines.append(json.dumps(event, default=str))
    ):
        yield


@asynccontextmanager
async def open_kit(target: Target, aws: AwsEndpoint) -> AsyncIterator[Kit]:
    """A :class:`Kit` for one test; everything it created is removed when the block ends."""
    async with AsyncExitStack() as stack:
        session = aioboto3.Session(region_name=aws.region)
        client = await stack.enter_async_context(
            session.client("secretsmanager", endpoint_url=aws.endpoint_url)
        )
        store = await stack.enter_async_context(
            AwsSecretStore(AwsConnection(region=aws.region, endpoint_url=aws.endpoint_url))
        )
        kit = Kit(target, aws, client, store)
        try:
            with rendered_logs(kit.lines):
                yield kit
        finally:
            await kit.cleanup()
