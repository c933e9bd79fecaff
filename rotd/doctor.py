"""``rotd doctor``: whether each secret could be rotated now, found out without rotating it.

For every secret it checks what a rotation will need, in the order the rotation needs it: the
AWS identity and region; the secret (described, read, its JSON, no native rotation, any
unfinished rotation); the master secret; the database from this host (reachable, TLS, the
current and master logins); the privileges the strategy uses and the clone's name; and the
Secrets Manager writes, by IAM policy simulation where the identity may run it; and, when the
inventory puts rotation events, their bus and events:PutEvents on it; for bridged secrets, the
bridge's queue and function and each secret's rotation settings (:mod:`rotd.bridgedoctor`).
It writes
nothing anywhere: no version, no password, no user. Secrets are checked concurrently within
the inventory's limits, each master secret is read once, and every call has a deadline. Each
finding is a :class:`Check` (ok, warn or FAIL); a failure says what to do about it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
)
from botocore.parsers import ResponseParserError

from rotd import bridgedoctor, templates
from rotd.accounts import Stores
from rotd.bridge.package import code_sha256
from rotd.bridge.wire import FAILURE_TAG, TESTED
from rotd.credentials import BadSecret, Credentials
from rotd.engines import (
    Endpoint,
    Engine,
    Login,
    Permission,
    Rotation,
    Session,
    SeveralPasswordsHere,
    TlsMode,
    all_engines,
    rotation,
)
from rotd.engines.registry import EngineRegistry
from rotd.errors import AwsError, Category, DatabaseError, EngineError, Missing, StoreError
from rotd.events import describe_bus
from rotd.iampolicy import Scope, bus_arn
from rotd.inventory import (
    AwsAccess,
    Bridge,
    EventBridge,
    Inventory,
    RenderSpec,
    SecretSpec,
    Strategy,
    every_service_endpoint,
    secret_name,
)
from rotd.logins import FIX as SHARED_LOGIN_FIX
from rotd.logins import SharedLogin, shared_logins
from rotd.observability import get_logger, redactor
from rotd.protocol import UNWRITTEN, UNWRITTEN_PLAN, endpoint_for, engine_fits
from rotd.render import examine, reads
from rotd.runner import HostLimits
from rotd.secretstore import (
    CURRENT,
    AwsClients,
    AwsConnection,
    SecretDescription,
    SecretStore,
    aws_error,
    open_client,
)
from rotd.strategies import CLONE_SUFFIX, login

log = get_logger("rotd.doctor")

INVENTORY = "-"  # the secret id of checks that concern the whole inventory
DB_TIMEOUT_S = 10.0
# The Secrets Manager writes a rotation makes; the reads are proven by making them.
WRITE_ACTIONS = ("secretsmanager:PutSecretValue", "secretsmanager:UpdateSecretVersionStage")
SIMULATE = "iam:SimulatePrincipalPolicy"


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    """One finding: which secret, which check, how it went, and what to do about a failure."""

    secret_id: str
    name: str
    level: Level
    detail: str
    fix: str | None = None

    @property
    def failed(self) -> bool:
        return self.level is Level.FAIL

    def line(self) -> str:
        text = f"{self.level.value:<4}  {self.secret_id}  {self.name}: {self.detail}"
        return f"{text}  FIX: {self.fix}" if self.fix else text

    def as_dict(self) -> dict[str, Any]:
        return {
            "level": self.level.value,
            "secret_id": self.secret_id,
            "check": self.name,
            "detail": self.detail,
            "fix": self.fix,
        }


class _Findings:
    """The checks of one secret, in the order they were made; every text passes the redactor."""

    def __init__(self, secret_id: str) -> None:
        self.secret_id = secret_id
        self.checks: list[Check] = []

    def add(self, level: Level, name: str, detail: str, fix: str | None = None) -> None:
        self.checks.append(
            Check(self.secret_id, name, level, _one_line(detail), _one_line(fix) if fix else None)
        )

    def ok(self, name: str, detail: str) -> None:
        self.add(Level.OK, name, detail)

    def warn(self, name: str, detail: str, fix: str | None = None) -> None:
        self.add(Level.WARN, name, detail, fix)

    def fail(self, name: str, detail: str, fix: str | None = None) -> None:
        self.add(Level.FAIL, name, detail, fix)

    def permission(self, name: str, verdict: Permission, *, refused: Level = Level.FAIL) -> None:
        if verdict.granted:
            self.ok(name, verdict.reason)
        else:
            self.add(refused, name, verdict.reason, verdict.fix)


# --- STS and IAM: the small edge this command adds ----------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Who rotd is to AWS (``sts get-caller-identity``)."""

    arn: str
    account: str

    @property
    def partition(self) -> str:
        parts = self.arn.split(":")
        return parts[1] if len(parts) > 1 and parts[1] else "aws"

    @property
    def root(self) -> bool:
        return self.arn.endswith(":root")

    def principal(self) -> str | None:
        """The IAM user or role whose policies a simulation evaluates, if there is one."""
        parts = self.arn.split(":", 5)
        if len(parts) != 6:
            return None
        _, partition, service, _, account, resource = parts
        if service == "iam" and resource.startswith(("user/", "role/")):
            return self.arn
        if service == "sts" and resource.startswith("assumed-role/"):
            # The role's path is not in the session's ARN; most roles have none.
            return f"arn:{partition}:iam::{account}:role/{resource.split('/')[1]}"
        return None

    def secret_arn(self, secret_id: str, region: str | None) -> str:
        """The ARN pattern IAM policies use for a secret known by name or by ARN."""
        if secret_id.startswith("arn:"):
            return secret_id
        return (
            f"arn:{self.partition}:secretsmanager:{region or '*'}:{self.account}:"
            f"secret:{secret_name(secret_id)}-??????"
        )


@dataclass(frozen=True)
class Decision:
    action: str
    decision: str  # allowed, explicitDeny, implicitDeny
    missing_context: tuple[str, ...] = ()


class AwsAccount(AwsClients):
    """STS and IAM over aioboto3. Use as ``async with AwsAccount(conn) as account``."""

    def __init__(self, connection: AwsConnection) -> None:
        super().__init__(connection)
        self._sts: Any = None
        self._iam: Any = None

    async def __aenter__(self) -> AwsAccount:
        conn = replace(
            self._connection, endpoint_url=every_service_endpoint(self._connection.endpoint_url)
        )
        try:
            self._sts = await self._stack.enter_async_context(
                open_client("sts", conn, retry_mode="standard")
            )
            self._iam = await self._stack.enter_async_context(
                open_client("iam", conn, retry_mode="standard")
            )
        except (BotoCoreError, ClientError) as exc:
            await self._stack.aclose()
            raise aws_error(exc, "sts:GetCallerIdentity") from None
        return self

    async def identity(self) -> Identity:
        try:
            r = await self._sts.get_caller_identity()
        except (BotoCoreError, ClientError, ResponseParserError) as exc:
            raise aws_error(exc, "sts:GetCallerIdentity") from None
        return Identity(arn=str(r["Arn"]), account=str(r["Account"]))

    async def simulate(
        self,
        principal: str,
        actions: Sequence[str],
        resource: str,
        context: Mapping[str, Sequence[str]] | None = None,
    ) -> list[Decision]:
        """What ``principal``'s policies decide for each action on ``resource``, with the
        condition keys in ``context`` (string lists) set as the calls would set them."""
        decisions: list[Decision] = []
        kwargs: dict[str, Any] = {
            "PolicySourceArn": principal,
            "ActionNames": list(actions),
            "ResourceArns": [resource],
        }
        if context:
            kwargs["ContextEntries"] = [
                {"ContextKeyName": k, "ContextKeyValues": list(v), "ContextKeyType": "stringList"}
                for k, v in context.items()
            ]
        try:
            while True:
                r = await self._iam.simulate_principal_policy(**kwargs)
                for result in r.get("EvaluationResults") or ():
                    decisions.append(
                        Decision(
                            action=str(result["EvalActionName"]),
                            decision=str(result["EvalDecision"]),
                            missing_context=tuple(result.get("MissingContextValues") or ()),
                        )
                    )
                if not r.get("IsTruncated"):
                    return decisions
                kwargs["Marker"] = r["Marker"]
        except (BotoCoreError, ClientError, ResponseParserError) as exc:
            raise aws_error(exc, SIMULATE) from None


class _Simulator:
    """IAM policy simulation, tried once before it is relied on: when the identity may not run
    it (or the endpoint lacks it), every secret is told so without asking again."""

    def __init__(self, account: AwsAccount | None, unavailable: str | None = None) -> None:
        self._account = account
        self.unavailable = unavailable
        self._proven = False
        self._first = asyncio.Lock()
        self._slots = asyncio.Semaphore(4)  # IAM's request rate is low

    async def decide(
        self,
        principal: str,
        actions: Sequence[str],
        resource: str,
        context: Mapping[str, Sequence[str]] | None = None,
    ) -> list[Decision] | str:
        """The decisions, or why they could not be had."""
        if self._proven:
            return await self._call(principal, actions, resource, context)
        async with self._first:
            if self.unavailable is not None:
                return self.unavailable
            result = await self._call(principal, actions, resource, context)
            self._proven = not isinstance(result, str)
            return result

    async def _call(
        self,
        principal: str,
        actions: Sequence[str],
        resource: str,
        context: Mapping[str, Sequence[str]] | None,
    ) -> list[Decision] | str:
        assert self._account is not None
        try:
            async with self._slots:
                return await self._account.simulate(principal, actions, resource, context)
        except AwsError as exc:
            # One identity for every secret: what failed for one fails for all.
            if exc.category is Category.PERMISSION:
                self.unavailable = f"{principal} may not call {SIMULATE} ({exc.reason})"
            elif exc.category is Category.NOT_FOUND:
                self.unavailable = f"IAM does not know {principal} (a role with a path?)"
            else:
                self.unavailable = f"{SIMULATE} failed: {exc.reason}"
            return self.unavailable


# --- the checks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Master:
    id: str
    arn: str
    credentials: Credentials


class _Masters:
    """Master secrets, each read once and shared by every secret that names it."""

    def __init__(self, store: Stores) -> None:
        self._store = store
        self._reads: dict[str, asyncio.Task[_Master]] = {}

    async def get(self, master_id: str) -> _Master:
        task = self._reads.get(master_id)
        if task is None:
            task = self._reads[master_id] = asyncio.ensure_future(self._read(master_id))
        return await asyncio.shield(task)

    async def _read(self, master_id: str) -> _Master:
        value = await self._store.get_value(master_id, stage=CURRENT)
        return _Master(master_id, value.arn, Credentials.parse(value.string, login_only=True))


async def diagnose(
    inventory: Inventory,
    specs: Sequence[SecretSpec],
    connection: AwsConnection,
    *,
    engines: Mapping[str, Engine] | None = None,
    db_timeout_s: float = DB_TIMEOUT_S,
) -> list[Check]:
    """Every check for ``specs``: the inventory's first, then each secret's, in order."""
    started = time.monotonic()
    head = _Findings(INVENTORY)
    head.ok("inventory", inventory.summary())
    for warning in inventory.warnings:
        head.warn("inventory", warning)
    engines = engines if engines is not None else all_engines()
    for broken in engines.problems() if isinstance(engines, EngineRegistry) else ():
        head.fail(
            "engines",
            str(broken),
            "reinstall or remove the package that provides it (pip show, pip uninstall)",
        )
    # Fewer retries than a rotation: a doctor should answer quickly and say what failed.
    connection = replace(connection, max_attempts=2)
    async with AsyncExitStack() as stack:
        try:
            store = await stack.enter_async_context(Stores(inventory, connection))
        except StoreError as exc:
            head.fail("aws.identity", exc.reason, "fix the aws settings of the inventory")
            return _finish(head.checks, started)
        identity: Identity | None = None
        account: AwsAccount | None = None
        try:
            account = await stack.enter_async_context(AwsAccount(connection))
            identity = await account.identity()
        except AwsError as exc:
            head.fail("aws.identity", exc.reason, _identity_fix(exc))
        if identity is not None:
            head.ok("aws.identity", f"{identity.arn} (account {identity.account})")
        who: dict[str | None, tuple[Identity | None, _Simulator]] = {
            None: (identity, _Simulator(account, None if account else UNKNOWN_ACCOUNT))
        }
        for role_arn, role_connection in _roles(inventory, connection).items():
            who[role_arn] = await _assume(stack, role_arn, role_connection, head)
        if inventory.region:
            endpoint = connection.endpoint_url or "AWS's endpoint"
            head.ok("aws.region", f"{inventory.region}, Secrets Manager at {endpoint}")
        else:
            head.fail(
                "aws.region",
                "no AWS region is set",
                "set aws.region in the inventory, or AWS_REGION or AWS_DEFAULT_REGION in "
                "rotd's environment",
            )
        simulator = _Simulator(account, None if account else "STS and IAM could not be reached")
        if inventory.eventbridge is not None:
            await _events(inventory, inventory.eventbridge, identity, simulator, head)
        doctor = _Doctor(
            inventory,
            store,
            who,
            engines,
            db_timeout_s,
            # Against the whole inventory, whichever secrets are checked.
            await shared_logins(inventory.secrets, store),
        )
        async with asyncio.TaskGroup() as group:
            bridges = [
                group.create_task(_bridge(bridge, access, connection, who))
                for bridge, access in bridgedoctor.bridges_of(specs).items()
            ]
            tasks = [group.create_task(doctor.secret(spec)) for spec in specs]
            renders = [
                group.create_task(_render(store, entry)) for entry in _renders_of(inventory, specs)
            ]
    checks = head.checks + [check for task in bridges for check in task.result()]
    checks += [check for task in tasks for check in task.result()]
    checks += [check for task in renders for check in task.result()]
    return _finish(checks, started)


def _renders_of(inventory: Inventory, specs: Sequence[SecretSpec]) -> list[RenderSpec]:
    """Every render entry when every secret is checked; else those of the secrets named."""
    if len(specs) == len(inventory.secrets):
        return list(inventory.renders)
    return [r for r in inventory.renders if any(reads(r, spec.id) for spec in specs)]


async def _render(store: SecretStore, entry: RenderSpec) -> list[Check]:
    found = _Findings(entry.path)
    for finding in await examine(entry, store):
        found.add(Level.OK if finding.ok else Level.FAIL, finding.name, finding.detail, finding.fix)
    return found.checks


def _finish(checks: list[Check], started: float) -> list[Check]:
    counts = {level: sum(1 for c in checks if c.level is level) for level in Level}
    log.info(
        "doctor.finished",
        ok=counts[Level.OK],
        warn=counts[Level.WARN],
        failed=counts[Level.FAIL],
        duration_s=round(time.monotonic() - started, 3),
    )
    return checks


async def _events(
    inventory: Inventory,
    bridge: EventBridge,
    identity: Identity | None,
    simulator: _Simulator,
    found: _Findings,
) -> None:
    """Whether rotation events can reach their bus: it exists, and events:PutEvents on it is
    allowed to whoever puts them (rotd's identity, or the role it assumes). Puts no event."""
    try:
        arn = await describe_bus(inventory, bridge)
    except AwsError as exc:
        if exc.operation == "sts:AssumeRole":
            fix = (
                f"let rotd's identity assume {bridge.role_arn} (sts:AssumeRole, and the role's "
                "trust policy), or correct events.eventbridge.role_arn"
            )
            found.fail("events.bus", exc.reason, fix)
        elif exc.category is Category.NOT_FOUND:
            fix = (
                f"create the bus (aws events create-event-bus --name {bridge.bus}) or correct "
                "events.eventbridge.bus and region; until then every event is dropped"
            )
            found.fail("events.bus", exc.reason, fix)
        elif exc.category is Category.PERMISSION:
            found.warn(
                "events.bus",
                f"not checked: {exc.reason}",
                "allow events:DescribeEventBus on the bus to let rotd doctor check it",
            )
        else:
            fix = "EventBridge must be reachable from this host (check region and endpoint_url)"
            found.fail("events.bus", exc.reason, fix)
        arn = bus_arn(bridge, Scope(region=bridge.region or "*", account=_account(identity)))
    else:
        found.ok("events.bus", f"{arn}, events from source {bridge.source!r}")
    principal = bridge.role_arn or (identity.principal() if identity is not None else None)
    name, action = "events.permissions", "events:PutEvents"
    if principal is None:
        who = identity.arn if identity is not None else "an unknown identity"
        found.warn(name, f"not checked ({action}): the policies of {who} cannot be simulated")
        return
    result = await simulator.decide(principal, [action], arn)
    if isinstance(result, str):
        found.warn(name, f"not checked ({action}): {result}")
    elif all(d.decision == "allowed" for d in result):
        found.ok(name, f"{action} allowed on {arn} for {principal} (IAM policy simulation)")
    else:
        found.fail(
            name,
            f"IAM policy simulation for {principal} on {arn}: {action} is not allowed",
            f"allow {action} on {arn} for {principal}; until then every event is dropped",
        )


async def _bridge(
    bridge: Bridge,
    access: AwsAccess,
    connection: AwsConnection,
    who: Mapping[str | None, tuple[Identity | None, _Simulator]],
) -> list[Check]:
    """The bridge's queue (readable, and rotd's actions on it by simulation) and function."""
    queue = _Findings(bridge.queue_url)
    function = _Findings(bridge.function_arn)
    async with asyncio.TaskGroup() as group:
        arn = group.create_task(
            bridgedoctor.check_queue(
                bridgedoctor.queue_connection(connection, bridge, access), bridge, queue
            )
        )
        group.create_task(
            bridgedoctor.check_function(
                bridgedoctor.function_connection(connection, bridge, access),
                bridge,
                function,
                code_sha256(),
            )
        )
    queue_arn = arn.result()
    if queue_arn is not None:
        identity, simulator = who.get(access.role_arn, (None, _Simulator(None, UNKNOWN_ACCOUNT)))
        await _simulated(
            queue, "bridge.permissions", identity, simulator, bridgedoctor.QUEUE_ACTIONS, queue_arn
        )
    return queue.checks + function.checks


async def _simulated(
    found: _Findings,
    name: str,
    identity: Identity | None,
    simulator: _Simulator,
    actions: Sequence[str],
    resource: str,
    context: Mapping[str, Sequence[str]] | None = None,
    *,
    proven: str = "",
    unseen: str = "",
) -> None:
    """Whether ``identity`` may make ``actions`` on ``resource``, by IAM policy simulation;
    ``proven`` notes what was shown otherwise, ``unseen`` what a denial may not account for."""
    listed = ", ".join(actions)
    if identity is None:
        found.warn(name, f"not checked ({listed}): the AWS identity is unknown")
        return
    if identity.root:
        found.warn(
            name,
            "rotd runs as the account's root user, which may do everything",
            "run rotd with an IAM role or user that holds only what it needs",
        )
        return
    principal = identity.principal()
    if principal is None:
        found.warn(
            name,
            f"not checked ({listed}): the policies of {identity.arn} cannot be simulated "
            "(only IAM users and roles can)",
        )
        return
    result = await simulator.decide(principal, actions, resource, context)
    if isinstance(result, str):
        fix = None
        if f"may not call {SIMULATE}" in result:
            fix = f"allow {SIMULATE} on {principal} to let rotd doctor check them"
        found.warn(name, f"not checked ({listed}): {result}", fix)
        return
    denied = [d for d in result if d.decision != "allowed"]
    if not denied:
        detail = f"{listed} allowed on {resource} for {principal} (IAM policy simulation)"
        found.ok(name, detail + (f"; {proven}" if proven else ""))
        return
    what = "; ".join(
        f"{d.decision} for {d.action}"
        + (f" (it depends on {', '.join(d.missing_context)})" if d.missing_context else "")
        for d in denied
    )
    explicit = any(d.decision == "explicitDeny" for d in denied)
    found.fail(
        name,
        f"IAM policy simulation for {principal} on {resource}: {what}"
        + (f" ({unseen})" if unseen and not explicit else ""),
        f"allow {', '.join(d.action for d in denied)} on {resource} for {principal}"
        + (" and remove the Deny" if explicit else "")
        + " (rotd iam-policy prints the policy)",
    )


def _account(identity: Identity | None) -> str:
    return identity.account if identity is not None else "*"


UNKNOWN_ACCOUNT = "STS and IAM could not be reached"


def _roles(inventory: Inventory, connection: AwsConnection) -> dict[str, AwsConnection]:
    """Each role the inventory assumes, and how to reach its account (its first database's)."""
    roles: dict[str, AwsConnection] = {}
    for access in inventory.accesses:
        if access.role_arn is not None and access.role_arn not in roles:
            roles[access.role_arn] = connection.to(access)
    return roles


async def _assume(
    stack: AsyncExitStack, role_arn: str, connection: AwsConnection, head: _Findings
) -> tuple[Identity | None, _Simulator]:
    """Assume ``role_arn`` (proving its trust policy) and learn who that makes rotd."""
    try:
        account = await stack.enter_async_context(AwsAccount(connection))
        identity = await account.identity()
    except AwsError as exc:
        head.fail(
            "aws.role",
            f"{role_arn}: {exc.reason}",
            "let rotd's identity assume the role: the role's trust policy names it as "
            "principal and its own policy allows sts:AssumeRole on the role "
            "(docs/accounts.md)",
        )
        return None, _Simulator(None, f"{role_arn} could not be assumed")
    head.ok("aws.role", f"{role_arn} assumed as {identity.arn} (account {identity.account})")
    return identity, _Simulator(account)


def _identity_fix(exc: AwsError) -> str:
    if exc.category is Category.AUTH:
        return "give rotd valid AWS credentials (aws.profile, environment, or a role)"
    if exc.category in (Category.UNREACHABLE, Category.TIMEOUT):
        return "STS must be reachable from this host (or set AWS_ENDPOINT_URL_STS)"
    return "check the aws settings of the inventory and rotd's AWS credentials"


class _Doctor:
    def __init__(
        self,
        inventory: Inventory,
        store: Stores,
        who: Mapping[str | None, tuple[Identity | None, _Simulator]],
        engines: Mapping[str, Engine],
        db_timeout_s: float,
        shared: Mapping[str, SharedLogin],
    ) -> None:
        self.inventory = inventory
        self.shared = shared
        self.store = store
        self.who = who
        # rotd's own identity; a secret reached through a role is checked as that role.
        self.identity = who[None][0]
        self.engines = engines
        self.db_timeout_s = db_timeout_s
        self.masters = _Masters(store)
        self.slots = asyncio.Semaphore(inventory.max_concurrent)
        self.hosts = HostLimits(inventory.max_concurrent_per_host)
        self.unreachable: dict[str, DatabaseError] = {}
        self.bridge_functions = sorted(
            {s.bridge.function_arn for s in inventory.secrets if s.bridge is not None}
        )

    async def secret(self, spec: SecretSpec) -> list[Check]:
        found = _Findings(spec.id)
        async with self.slots:
            description, current = await self._read_secret(spec, found)
            if current is not None:
                self._shared_login(spec, current, found)
            master = await self._read_master(spec, current, found)
            if description is None or current is None:
                return found.checks
            database = _Findings(spec.id)
            permissions = _Findings(spec.id)
            async with asyncio.TaskGroup() as group:
                group.create_task(self._database(spec, current, master, database))
                group.create_task(self._permissions(spec, description, permissions))
        return found.checks + database.checks + permissions.checks

    # Secrets Manager.

    async def _read_secret(
        self, spec: SecretSpec, found: _Findings
    ) -> tuple[SecretDescription | None, Credentials | None]:
        # Not protocol.inspect: it drops the credentials that the database checks need.
        try:
            description = await self.store.describe(spec.id)
        except StoreError as exc:
            found.fail(
                "secret.describe",
                exc.reason,
                self._store_fix(exc, spec.id, "secretsmanager:DescribeSecret"),
            )
            return None, None
        found.ok("secret.describe", description.arn)
        if not bridgedoctor.check_rotation(spec, description, self.bridge_functions, found):
            _native_rotation(description, found)
        version = description.version_with(CURRENT)
        if version is None:
            found.fail(
                "secret.read",
                "the secret has no AWSCURRENT version",
                "put the credentials JSON with the AWSCURRENT label (put-secret-value)",
            )
            return None, None
        try:
            value = await self.store.get_value(spec.id, version_id=version)
        except StoreError as exc:
            fix = self._store_fix(exc, description.arn, "secretsmanager:GetSecretValue")
            found.fail("secret.read", exc.reason, fix)
            return None, None
        found.ok("secret.read", f"AWSCURRENT ({version}) read, so its KMS key is usable")
        try:
            current = Credentials.parse(value.string, engine=spec.engine)
        except BadSecret as exc:
            found.fail(
                "secret.format",
                str(exc),
                "store AWS's JSON for database credentials: engine, host, username, password "
                "(port, dbname, masterarn, ssl optional)",
            )
            return None, None
        engine = spec.engine or current.engine
        found.ok(
            "secret.format",
            f"engine {engine}, user {current.username!r}, host {current.host}:{current.port}",
        )
        _ssl(spec, current, found)
        _derived_keys(spec, current, found)
        try:
            capabilities = engine_fits(
                spec, endpoint_for(spec, current), self.engines
            ).info.capabilities
        except EngineError as exc:
            found.fail(
                "secret.engine",
                str(exc),
                "install the engine's package, or change the secret's engine, the database's "
                "engine: or the strategy in the inventory",
            )
            return None, None
        if not capabilities.rotation_lock:
            found.warn(
                "secret.engine",
                f"engine {engine!r} has no rotation lock: only one rotd process may rotate "
                "this secret",
                "run a single rotd process for the secrets of this engine",
            )
        await self._unfinished(spec, description, current, found)
        return description, current

    def _shared_login(self, spec: SecretSpec, current: Credentials, found: _Findings) -> None:
        shared = self.shared.get(spec.id)
        if shared is not None:
            found.fail("secret.shared_login", shared.problem, SHARED_LOGIN_FIX)
            return
        endpoint = endpoint_for(spec, current)
        found.ok(
            "secret.shared_login",
            f"no other secret of the inventory holds user {current.username!r} at "
            f"{endpoint.address}",
        )

    async def _unfinished(
        self,
        spec: SecretSpec,
        description: SecretDescription,
        current: Credentials,
        found: _Findings,
    ) -> None:
        token = description.unfinished_pending()
        if token is None:
            found.ok("secret.unfinished", "no unfinished rotation")
            return
        try:
            pending = Credentials.parse(
                (await self.store.get_value(spec.id, version_id=token)).string, engine=spec.engine
            )
        except (StoreError, BadSecret) as exc:
            if isinstance(exc, StoreError) and exc.missing is Missing.VALUE and spec.bridged:
                found.warn(
                    "secret.unfinished",
                    f"Secrets Manager's rotation to version {token} is in progress, its value "
                    "not yet written (createSecret): the bridge function's steps continue it, "
                    "or rotd's scan finishes it",
                )
                return
            if isinstance(exc, StoreError) and exc.missing is Missing.VALUE:
                found.warn(
                    "secret.unfinished",
                    f"version {token} holds AWSPENDING without a value: {UNWRITTEN}; the next "
                    f"rotation takes it over ({UNWRITTEN_PLAN})",
                )
                return
            found.fail(
                "secret.unfinished",
                f"the unfinished rotation {token} cannot be resumed: its AWSPENDING value "
                f"is unusable ({exc})",
                f"remove the AWSPENDING label from version {token} (update-secret-version-stage)",
            )
            return
        if spec.strategy is Strategy.ALTERNATING_USERS and pending.username == current.username:
            found.fail(
                "secret.unfinished",
                f"the unfinished rotation {token} has the same username as AWSCURRENT, which "
                "alternating_users cannot finish",
                "finish it with strategy single_user, or remove the AWSPENDING label",
            )
            return
        if spec.bridged:
            tested = TESTED in description.versions.get(token, ())
            found.warn(
                "secret.unfinished",
                f"Secrets Manager's rotation to version {token} is in progress (user "
                f"{pending.username!r}, value written, "
                + ("set and tested" if tested else "not yet tested")
                + "): the bridge function's steps continue it, or rotd's scan finishes it",
            )
            return
        found.warn(
            "secret.unfinished",
            f"version {token} holds AWSPENDING without AWSCURRENT (user {pending.username!r}): "
            "the next rotation resumes it",
        )

    async def _read_master(
        self, spec: SecretSpec, current: Credentials | None, found: _Findings
    ) -> _Master | None:
        master_id = spec.master_secret or (current.masterarn if current else None)
        alternating = spec.strategy is Strategy.ALTERNATING_USERS
        if master_id is None:
            if alternating and current is not None:
                found.fail(
                    "master.read",
                    "alternating_users needs a master login, and none is set",
                    "set master_secret in the inventory, or masterarn in the secret",
                )
            return None
        # single_user turns to the master only when the user's own passwords are refused.
        level = Level.FAIL if alternating else Level.WARN
        try:
            master = await self.masters.get(master_id)
        except StoreError as exc:
            fix = self._store_fix(exc, master_id, "secretsmanager:GetSecretValue")
            found.add(level, "master.read", f"master secret {master_id!r}: {exc.reason}", fix)
            return None
        except BadSecret as exc:
            found.add(
                level,
                "master.read",
                f"master secret {master_id!r}: {exc}",
                "store the master's credentials as AWS's JSON (engine, host, username, password)",
            )
            return None
        found.ok("master.read", f"{master.arn} read (user {master.credentials.username!r})")
        return master

    def _store_fix(self, exc: StoreError, secret_id: str, action: str) -> str:
        if exc.category is Category.REPLICA:
            return "list the primary secret instead: aws.region of its primary on the database"
        if exc.category is Category.NOT_FOUND:
            where = f"region {self.inventory.region or '(none)'}"
            if self.identity is not None:
                where += f", account {self.identity.account}"
            return f"check the name or ARN ({where}); create the secret or take it out"
        if _denied(exc):
            who = f" for {self.identity.principal() or self.identity.arn}" if self.identity else ""
            if "KMS" in exc.reason:
                return f"allow kms:Decrypt on the secret's KMS key{who}"
            resource = (
                self.identity.secret_arn(secret_id, self.inventory.region)
                if self.identity
                else secret_id
            )
            return f"allow {action} on {resource}{who}"
        if exc.transient:
            return "Secrets Manager must be reachable from this host; try again if it was busy"
        return f"make {action} on {secret_id} succeed for rotd's identity"

    # The database.

    async def _database(
        self,
        spec: SecretSpec,
        current: Credentials,
        master: _Master | None,
        found: _Findings,
    ) -> None:
        # What an engine that hands logins on (exec) may know of the secret they are for.
        context = rotation.set(Rotation(spec.id, str(spec.strategy)))
        try:
            await self._database_as(spec, current, master, found)
        finally:
            rotation.reset(context)

    async def _database_as(
        self,
        spec: SecretSpec,
        current: Credentials,
        master: _Master | None,
        found: _Findings,
    ) -> None:
        endpoint = endpoint_for(spec, current)
        alternating = spec.strategy is Strategy.ALTERNATING_USERS
        async with self.hosts.slot(endpoint), AsyncExitStack() as stack:
            try:
                session = await self._open(stack, login(endpoint, current), found, "db.login")
                if session is not None:
                    found.ok(
                        "db.login",
                        f"user {current.username!r} logs in with the AWSCURRENT password",
                    )
                master_session: Session | None = None
                if master is not None:
                    credentials = master.credentials
                    master_session = await self._open(
                        stack,
                        login(endpoint, credentials),
                        found,
                        "master.login",
                        refused=Level.FAIL if alternating else Level.WARN,
                        secret_id=master.id,
                    )
                    if master_session is not None:
                        found.ok(
                            "master.login",
                            f"user {credentials.username!r} logs in with the master secret",
                        )
            except _Unreachable:
                return
            await self._tls(endpoint, session or master_session, found)
            capabilities = self.engines[endpoint.engine].info.capabilities
            if not capabilities.permission_checks:
                found.warn(
                    "db.permissions",
                    f"engine {endpoint.engine!r} cannot check permissions without acting: "
                    "the first rotation will tell",
                )
                return
            setter = master_session if alternating else session or master_session
            if setter is not None:
                await self._ask(
                    found, "db.password_policy", setter.accepts_passwords(spec.password)
                )
            if alternating:
                if master_session is not None:
                    await self._alternating(current, master_session, found)
                return
            # With several passwords, a master changes them whenever one is set (the user's
            # own login rarely may): then only the master's permission matters.
            by_master = capabilities.several_passwords and master_session is not None
            if session is not None and not by_master:
                await self._ask(found, "db.own_password", session.may_set_own_password())
            if not capabilities.several_passwords and (session or master_session) is not None:
                await self._several_here(session or master_session, current.username, found)
            if master_session is not None:
                await self._ask(
                    found,
                    "master.reset_password",
                    master_session.may_set_password(current.username),
                    refused=Level.FAIL if by_master else Level.WARN,
                )

    async def _several_here(self, session: Session | None, username: str, found: _Findings) -> None:
        """Single user on a server that holds several passwords for some logins only (MySQL
        8.0.14+): whether rotd's login may keep the current password beside the new one, or
        single user keeps its window. Silent where the server cannot (MariaDB, MySQL 5.7)."""
        if not isinstance(session, SeveralPasswordsHere):
            return
        name = "db.several_passwords"
        try:
            verdict = await session.may_keep_several_passwords(username)
        except DatabaseError as exc:
            found.warn(name, f"could not find out: {exc.reason}")
            return
        if verdict is not None:
            found.permission(name, verdict, refused=Level.WARN)

    async def _open(
        self,
        stack: AsyncExitStack,
        login: Login,
        found: _Findings,
        name: str,
        *,
        refused: Level = Level.FAIL,
        secret_id: str | None = None,
    ) -> Session | None:
        """A session as ``login``, or None when the login failed (reported as ``name``).

        Raises :class:`_Unreachable` (reported) when the server cannot be reached, or TLS
        cannot be set up: nothing more can be found out about it then. An address found
        unreachable once is not tried again, so that secrets queued on a dead host do not
        each wait for the deadline.
        """
        endpoint = login.endpoint
        known = self.unreachable.get(endpoint.address)
        if known is not None:
            self._unreachable(endpoint, known, found)
        try:
            session = await stack.enter_async_context(
                self.engines[endpoint.engine].connect(login, timeout_s=self.db_timeout_s)
            )
        except DatabaseError as exc:
            if exc.category in (Category.UNREACHABLE, Category.TIMEOUT, Category.TLS):
                if exc.category is not Category.TLS:
                    self.unreachable[endpoint.address] = exc
                self._unreachable(endpoint, exc, found)
            self._reachable(endpoint, found)
            whose = secret_id or found.secret_id
            if exc.category is Category.AUTH:
                fix = (
                    f"the AWSCURRENT password of secret {whose!r} does not let user "
                    f"{login.username!r} log in: fix the secret, or the user's password"
                )
            else:
                fix = f"let user {login.username!r} of secret {whose!r} log in here"
            found.add(refused, name, _said(endpoint, exc), fix)
            return None
        self._reachable(endpoint, found)
        return session

    def _unreachable(self, endpoint: Endpoint, exc: DatabaseError, found: _Findings) -> None:
        if exc.category is Category.TLS:
            self._reachable(endpoint, found)
            found.fail("db.tls", _said(endpoint, exc), _tls_fix(endpoint))
        else:
            found.fail(
                "db.reachable",
                _said(endpoint, exc),
                f"{endpoint.address} must be reachable from this host: check DNS, routes, "
                "security groups and firewalls (the inventory's host and port, when set, "
                "are the route from this host)",
            )
        raise _Unreachable

    def _reachable(self, endpoint: Endpoint, found: _Findings) -> None:
        if not any(c.name == "db.reachable" for c in found.checks):
            found.ok("db.reachable", f"{endpoint.address} answers from this host")

    async def _tls(self, endpoint: Endpoint, session: Session | None, found: _Findings) -> None:
        mode = endpoint.tls.mode
        safer = "set tls: verify-full and ca_file in the inventory"
        if mode is TlsMode.DISABLE:
            found.warn(
                "db.tls",
                "TLS is off (tls: disable, or the secret's ssl is false): logins and "
                "passwords cross the network in clear",
                safer,
            )
            return
        if session is None:
            return
        capabilities = self.engines[endpoint.engine].info.capabilities
        if not capabilities.tls:
            found.warn(
                "db.tls",
                f"engine {endpoint.engine!r} lacks the tls capability, so rotd cannot tell "
                "whether logins and passwords cross the network encrypted",
                "make sure the engine (for exec, each command) uses TLS to reach the system",
            )
            return
        try:
            encrypted = await session.tls_in_use()
        except DatabaseError as exc:
            found.warn("db.tls", f"cannot tell whether TLS is in use: {exc.reason}")
            return
        if not encrypted:
            found.warn(
                "db.tls",
                f"the server offers no TLS, so logins and passwords cross the network in "
                f"clear (tls: {mode})",
                "turn TLS on in the server, then " + safer,
            )
        elif mode in (TlsMode.VERIFY_CA, TlsMode.VERIFY_FULL) or (
            mode is TlsMode.REQUIRE
            and endpoint.tls.ca_file
            and capabilities.tls_require_verifies_ca
        ):
            checked = ", and the host name" if mode is TlsMode.VERIFY_FULL else ""
            against = endpoint.tls.ca_file or "the system's CAs"
            found.ok("db.tls", f"TLS, certificate verified against {against}{checked}")
        else:
            found.warn(
                "db.tls",
                f"TLS is in use, but the server's certificate is not verified (tls: {mode})",
                safer,
            )

    async def _alternating(self, current: Credentials, master: Session, found: _Findings) -> None:
        original = current.username.removesuffix(CLONE_SUFFIX)
        clone = original + CLONE_SUFFIX
        try:
            await master.check_username(clone)
        except DatabaseError as exc:
            if exc.category is not Category.NAME_TOO_LONG:
                found.fail("clone.name", exc.reason)
            else:
                found.fail(
                    "clone.name",
                    exc.reason,
                    f"rename user {original!r} so that {clone!r} fits, or use strategy single_user",
                )
        else:
            found.ok("clone.name", f"{clone!r} fits the server's limit")
        await self._ask(found, "master.privileges", master.may_mirror_user(original, clone))

    async def _ask(
        self,
        found: _Findings,
        name: str,
        question: Awaitable[Permission],
        *,
        refused: Level = Level.FAIL,
    ) -> None:
        try:
            verdict = await question
        except DatabaseError as exc:
            found.add(refused, name, f"could not find out: {exc.reason}")
            return
        found.permission(name, verdict, refused=refused)

    # IAM.

    async def _permissions(
        self, spec: SecretSpec, description: SecretDescription, found: _Findings
    ) -> None:
        wanted = WRITE_ACTIONS + (bridgedoctor.SECRET_ACTIONS if spec.bridged else ())
        # rotd tags bridged secrets with its failure tag only (rotd iam-policy's condition).
        context = {"aws:TagKeys": [FAILURE_TAG]} if spec.bridged else None
        identity, simulator = self.who[spec.aws.role_arn]
        await _simulated(
            found,
            "iam.permissions",
            identity,
            simulator,
            wanted,
            description.arn,
            context,
            proven="DescribeSecret and GetSecretValue were proven by reading",
            unseen="a resource policy on the secret is not seen by it",
        )


class _Unreachable(Exception):
    """The server cannot be reached (already reported): stop checking it."""


def _native_rotation(description: SecretDescription, found: _Findings) -> None:
    """A secret rotd rotates itself: Secrets Manager's own rotation must be off."""
    if description.rotation_enabled and description.rotation_lambda:
        found.fail(
            "secret.native_rotation",
            "Secrets Manager's own rotation is enabled with "
            f"{description.rotation_lambda}; two rotators would fight",
            f"aws secretsmanager cancel-rotate-secret --secret-id {description.arn}, "
            "or remove the secret from the inventory",
        )
    elif description.rotation_enabled:
        found.warn(
            "secret.native_rotation",
            "Secrets Manager says rotation is enabled, with no Lambda: another service "
            "(RDS-managed passwords?) may rotate it too",
            "let one rotator own the secret",
        )
    else:
        found.ok("secret.native_rotation", "Secrets Manager's own rotation is off")


def _one_line(text: str) -> str:
    """``text`` scrubbed of secrets, on one line (servers' messages may span several)."""
    return " ".join(redactor.scrub(text).split())


def _denied(exc: StoreError) -> bool:
    """Whether Secrets Manager refused access; an endpoint that answers HTTP 403 without
    AWS's JSON error (moto's server, some proxies) is refusing it too."""
    return exc.category is Category.PERMISSION or exc.reason.startswith("refused (403)")


def _ssl(spec: SecretSpec, current: Credentials, found: _Findings) -> None:
    """The secret's ``ssl`` against the inventory's ``tls``: rotd never lowers the inventory's
    mode, but a secret that asks for less tells its other readers to connect with less."""
    if current.ssl is None:
        return
    mode = spec.tls.mode
    if spec.tls_set and current.ssl.below(mode):
        found.fail(
            "secret.ssl",
            f"the secret's ssl ({current.ssl}) asks for less than the inventory's tls: {mode}; "
            f"rotd connects with {mode}, but the secret's other readers may not",
            f"set ssl in the secret to {mode} (or true), or lower tls in the inventory",
        )
        return
    used = current.tls_under(spec.tls, chosen=spec.tls_set).mode
    whose = f"the inventory's tls: {mode}" if spec.tls_set else "the inventory sets no tls"
    found.ok("secret.ssl", f"ssl {current.ssl} ({whose}): rotd connects with {used}")


def _derived_keys(spec: SecretSpec, current: Credentials, found: _Findings) -> None:
    """The inventory's derived keys against AWSCURRENT: each template renders from its keys
    (else every rotation fails at createSecret), and the stored values are what it renders."""
    if not spec.derived_keys:
        return
    templates.register(current.document, (key for key, _ in spec.derived_keys))
    stale = []
    for key, source in spec.derived_keys:
        try:
            value = templates.render(
                source, current.template_keys(), what=templates.derived_key(key)
            )
        except templates.RenderError as exc:
            found.fail(
                "secret.derived_keys",
                f"{exc}; every rotation of this secret would fail at createSecret",
                "add the missing key to the secret, or change the template in the inventory",
            )
            return
        if current.document.get(key) != value:
            stale.append(key)
    if stale:
        found.warn(
            "secret.derived_keys",
            f"AWSCURRENT's {', '.join(stale)} is not what its template renders from this "
            "version's own keys (stale, or written by hand)",
            "nothing to do: the next rotation writes it anew; rotate now if readers use it",
        )
        return
    names = ", ".join(key for key, _ in spec.derived_keys)
    found.ok("secret.derived_keys", f"{names}: rendered from AWSCURRENT as stored")


def _said(endpoint: Endpoint, exc: DatabaseError) -> str:
    """The error's reason, with the address it concerns when the reason lacks it."""
    return exc.reason if endpoint.address in exc.reason else f"{endpoint.address}: {exc.reason}"


def _tls_fix(endpoint: Endpoint) -> str:
    mode = endpoint.tls.mode
    if mode in (TlsMode.VERIFY_CA, TlsMode.VERIFY_FULL):
        name = " and connect by a name the certificate holds" if mode is TlsMode.VERIFY_FULL else ""
        return f"set ca_file to the CA that signed {endpoint.address}'s certificate{name}"
    return f"turn TLS on in the server at {endpoint.address}, or lower tls (not advised)"
