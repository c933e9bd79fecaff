"""``rotd iam-policy``: the least-privilege IAM policy that an inventory's rotations need.

Rotated secrets get the four calls a rotation makes (DescribeSecret, GetSecretValue,
PutSecretValue, UpdateSecretVersionStage); master secrets, named by ``master_secret`` or by the
``masterarn`` inside a secret that has no ``master_secret``, get GetSecretValue only; the
secrets rendered into files (``render``) that are not rotated get GetSecretValue only too; the
customer-managed KMS keys of those secrets get kms:Decrypt (and kms:GenerateDataKey where rotd
writes), usable only through Secrets Manager in the secrets' region; an inventory with
``events.eventbridge`` adds events:PutEvents on the bus (or sts:AssumeRole on the role that
puts the events); bridged secrets (``rotation: bridge``) add rotd's side of the bridge (its
queue, RotateSecret, the failure tag, the function's configuration) and a policy for each
bridge function's role (reading the secrets bridged through it, sending to its queue). Names
become exact ARNs when AWS can be reached; otherwise, or when asked to stay offline, secrets
are named by ARN patterns (``<name>-??????``) and every guess is reported as a warning. The
same facts always give the same document. Secret values are read only for their ``masterarn``
and never kept.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aioboto3
from botocore.exceptions import BotoCoreError, ClientError

from rotd.bridge.wire import FAILURE_TAG
from rotd.credentials import BadSecret, Credentials
from rotd.errors import AwsError, Category, StoreError
from rotd.inventory import EventBridge, Inventory, SecretSpec, aws_region
from rotd.secretstore import (
    NO_REGION,
    AwsClients,
    AwsConnection,
    AwsSecretStore,
    SecretDescription,
    open_client,
)

VERSION = "2012-10-17"
ROTATE_ACTIONS = (
    "secretsmanager:DescribeSecret",
    "secretsmanager:GetSecretValue",
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecretVersionStage",
)
READ_ACTIONS = ("secretsmanager:GetSecretValue",)
KMS_WRITE_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey")
KMS_READ_ACTIONS = ("kms:Decrypt",)
EVENTS_ACTIONS = ("events:PutEvents",)
ASSUME_ACTIONS = ("sts:AssumeRole",)
CONCURRENCY = 16
BASE = "base"  # the label of rotd's own identity
BRIDGE_QUEUE_ACTIONS = (
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
)
BRIDGE_TAG_ACTIONS = ("secretsmanager:TagResource", "secretsmanager:UntagResource")
BRIDGE_START_ACTIONS = ("secretsmanager:RotateSecret",)
BRIDGE_FUNCTION_ACTIONS = ("lambda:GetFunctionConfiguration",)
FUNCTION_READ_ACTIONS = ("secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue")
FUNCTION_SEND_ACTIONS = ("sqs:SendMessage",)
FUNCTION_LABEL = "bridge-function:"

_SECRET_ARN = re.compile(
    r"^arn:(?P<partition>aws[\w-]*):secretsmanager:(?P<region>[\w-]+):(?P<account>\d{12}):"
    r"secret:(?P<name>.+)$"
)
_KMS_ARN = re.compile(
    r"^arn:(?P<partition>aws[\w-]*):kms:(?P<region>[\w-]+):(?P<account>\d{12}):"
    r"(?P<kind>key|alias)/(?P<id>.+)$"
)
# AWS appends "-" and six random characters to a secret's name in its full ARN.
_FULL_ARN_SUFFIX = re.compile(r"-[A-Za-z0-9]{6}$")


@dataclass(frozen=True)
class Scope:
    """Where a pattern points when no ARN is known: partition, region and account (or ``*``)."""

    partition: str = "aws"
    region: str = "*"
    account: str = "*"


@dataclass(frozen=True)
class Grant:
    """One secret as the policy names it: an exact ARN or a pattern, and its KMS key's ARN."""

    resource: str
    kms_key: str | None = None

    @property
    def region(self) -> str:
        match = _SECRET_ARN.match(self.resource)
        return match.group("region") if match else "*"


@dataclass(frozen=True)
class Policy:
    document: dict[str, Any]
    warnings: tuple[str, ...]
    # The role policy of each bridge function, by its label (:func:`function_label`).
    functions: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def text(self) -> str:
        """The document; with bridge functions, an object keyed ``base`` (rotd's identity)
        and by each function's label."""
        if not self.functions:
            return json.dumps(self.document, indent=2)
        return json.dumps({BASE: self.document, **self.functions}, indent=2)


def secret_resource(secret_id: str, scope: Scope) -> str:
    """A full ARN as it is; a name or partial ARN as the pattern that matches its full ARN."""
    match = _SECRET_ARN.match(secret_id)
    if match is None:
        return (
            f"arn:{scope.partition}:secretsmanager:{scope.region}:{scope.account}:"
            f"secret:{secret_id}-??????"
        )
    if _FULL_ARN_SUFFIX.search(match.group("name")):
        return secret_id
    return f"{secret_id}-??????"


def policy_document(
    rotated: Sequence[Grant],
    masters: Sequence[Grant],
    rendered: Sequence[Grant] = (),
    events: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The policy for these secrets: fixed statement order, sorted resources, no empty statement;
    ``events`` (:func:`events_statements`) last.

    A master or rendered secret that is also rotated needs nothing more; a KMS key that a
    rotated secret uses is not repeated among the keys that only read secrets use.
    """
    rotated_resources = sorted({g.resource for g in rotated})
    master_resources = sorted({g.resource for g in masters} - set(rotated_resources))
    rendered_resources = sorted(
        {g.resource for g in rendered} - set(rotated_resources) - set(master_resources)
    )
    write_keys = _keys(rotated)
    read_keys = {k: r for k, r in _keys([*masters, *rendered]).items() if k not in write_keys}
    statements = []
    if rotated_resources:
        statements.append(statement("RotateSecrets", ROTATE_ACTIONS, rotated_resources))
    if master_resources:
        statements.append(statement("ReadMasterSecrets", READ_ACTIONS, master_resources))
    if rendered_resources:
        statements.append(statement("ReadRenderedSecrets", READ_ACTIONS, rendered_resources))
    if write_keys:
        statements.append(statement("UseSecretKmsKeys", KMS_WRITE_ACTIONS, write_keys))
    if read_keys:
        statements.append(statement("ReadMasterSecretKmsKeys", KMS_READ_ACTIONS, read_keys))
    statements.extend(events)
    return {"Version": VERSION, "Statement": statements}


def bus_arn(bridge: EventBridge, scope: Scope) -> str:
    """The event bus's ARN: as written, or built from its name, region and the scope."""
    if bridge.bus.startswith("arn:"):
        return bridge.bus
    region = bridge.region or scope.region
    return f"arn:{scope.partition}:events:{region}:{scope.account}:event-bus/{bridge.bus}"


def events_statements(bridge: EventBridge, scope: Scope) -> tuple[list[dict[str, Any]], list[str]]:
    """What putting rotation events needs: events:PutEvents on the bus, or, when a role puts
    them, sts:AssumeRole on that role (whose own policy needs PutEvents); and the warnings."""
    bus = bus_arn(bridge, scope)
    warnings: list[str] = []
    if "*" in bus:
        warnings.append(
            f"events: the bus {bridge.bus!r} is named by the pattern {bus}: write its ARN as "
            "events.eventbridge.bus, or run rotd iam-policy where AWS can be reached"
        )
    if bridge.role_arn is None:
        return [statement("PutRotationEvents", EVENTS_ACTIONS, [bus])], warnings
    warnings.append(
        f"events: rotd puts its events as the role {bridge.role_arn}; that role needs "
        f"events:PutEvents on {bus}, and a trust policy that lets rotd's identity assume it"
    )
    return [statement("AssumeEventsRole", ASSUME_ACTIONS, [bridge.role_arn])], warnings


# --- the bridge: rotd's side, and each bridge function's role -----------------------------------


def queue_arn(queue_url: str, scope: Scope) -> str:
    """The ARN of the queue at ``queue_url``: an AWS URL names its region and account; an
    emulator's names the account in its path and takes the secrets' region."""
    parts = urlsplit(queue_url)
    account, name = parts.path.strip("/").split("/")[:2]
    host = (parts.hostname or "").lower()
    match = re.match(r"^(?:sqs\.([a-z0-9-]+)|([a-z0-9-]+)\.queue)\.amazonaws\.com(\.cn)?$", host)
    if match is None:
        return f"arn:{scope.partition}:sqs:{scope.region}:{account}:{name}"
    region = match.group(1) or match.group(2)
    partition = "aws-cn" if match.group(3) else scope.partition
    return f"arn:{partition}:sqs:{region}:{account}:{name}"


def function_arn(arn: str) -> str:
    """A function's ARN without its version or alias: IAM names the function by it."""
    return ":".join(arn.split(":")[:7])


def function_label(arn: str) -> str:
    """The key of a bridge function's role policy in ``rotd iam-policy``'s output."""
    return FUNCTION_LABEL + function_arn(arn)


def bridge_statements(
    specs: Sequence[SecretSpec], grants: Sequence[Grant], scope: Scope
) -> list[dict[str, Any]]:
    """rotd's side of the bridge for these bridged secrets (``grants`` in the same order):
    reading its queues, starting rotations (``rotd rotate``), the failure tag only, and the
    functions' configuration (``rotd doctor``)."""
    assert all(s.bridge is not None for s in specs)
    bridges = [s.bridge for s in specs if s.bridge is not None]
    secrets = sorted({g.resource for g in grants})
    tags = statement("ReportBridgeFailures", BRIDGE_TAG_ACTIONS, secrets)
    tags["Condition"] = {"ForAllValues:StringEquals": {"aws:TagKeys": [FAILURE_TAG]}}
    return [
        statement(
            "ReadBridgeQueues",
            BRIDGE_QUEUE_ACTIONS,
            {queue_arn(b.queue_url, scope) for b in bridges},
        ),
        statement("StartBridgedRotations", BRIDGE_START_ACTIONS, secrets),
        tags,
        statement(
            "ReadBridgeFunctions",
            BRIDGE_FUNCTION_ACTIONS,
            {function_arn(b.function_arn) for b in bridges},
        ),
    ]


def function_policies(
    specs: Sequence[SecretSpec], grants: Sequence[Grant], scope: Scope
) -> dict[str, dict[str, Any]]:
    """The policy of each bridge function's role, by :func:`function_label`: reading the
    secrets bridged through it (and their customer-managed KMS keys), sending to its queue."""
    by_function: dict[str, list[tuple[SecretSpec, Grant]]] = {}
    for spec, grant in zip(specs, grants, strict=True):
        assert spec.bridge is not None
        by_function.setdefault(function_label(spec.bridge.function_arn), []).append((spec, grant))
    documents: dict[str, dict[str, Any]] = {}
    for label in sorted(by_function):
        pairs = by_function[label]
        queues = {queue_arn(s.bridge.queue_url, scope) for s, _ in pairs if s.bridge is not None}
        statements = [
            statement("ReadBridgedSecrets", FUNCTION_READ_ACTIONS, {g.resource for _, g in pairs}),
            statement("SendBridgeSteps", FUNCTION_SEND_ACTIONS, queues),
        ]
        keys = _keys(g for _, g in pairs)
        if keys:
            statements.append(statement("ReadBridgedSecretKmsKeys", KMS_READ_ACTIONS, keys))
        documents[label] = {"Version": VERSION, "Statement": statements}
    return documents


def function_notes(functions: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """What the function roles' documents cannot say themselves."""
    if not functions:
        return ()
    return (
        "the documents keyed bridge-function:<ARN> are for the execution role of that bridge "
        "function, not for rotd; that role also needs the managed policy "
        "AWSLambdaBasicExecutionRole (CloudWatch Logs), and kms:Decrypt on the KMS key of "
        "each secret it reads if that key is customer-managed (listed when AWS was reached)",
        "Secrets Manager must be allowed to invoke each bridge function: aws lambda "
        "add-permission --function-name <ARN> --statement-id secretsmanager --principal "
        "secretsmanager.amazonaws.com --action lambda:InvokeFunction --source-account "
        "<ACCOUNT>",
    )


def _keys(grants: Iterable[Grant]) -> dict[str, set[str]]:
    """Key ARN -> the regions of the secrets encrypted with it."""
    keys: dict[str, set[str]] = {}
    for grant in grants:
        if grant.kms_key is not None:
            keys.setdefault(grant.kms_key, set()).add(grant.region)
    return keys


def statement(
    sid: str, actions: Sequence[str], resources: Iterable[str] | dict[str, set[str]]
) -> dict[str, Any]:
    """One Allow statement; KMS keys (a dict: key ARN -> the regions of its secrets) are
    usable only through Secrets Manager in those regions."""
    statement: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": sorted(actions),
        "Resource": sorted(resources),
    }
    if isinstance(resources, dict):
        # KMS keys: only when Secrets Manager uses them on the principal's behalf.
        services = sorted(
            {f"secretsmanager.{r}.amazonaws.com" for regions in resources.values() for r in regions}
        )
        operator = "StringLike" if any("*" in s for s in services) else "StringEquals"
        via: str | list[str] = services[0] if len(services) == 1 else services
        statement["Condition"] = {operator: {"kms:ViaService": via}}
    return statement


async def build_policy(inventory: Inventory, *, offline: bool = False) -> Policy:
    """The policy for ``inventory`` and the warnings about whatever had to be guessed.

    Calls AWS unless ``offline``; if AWS cannot be reached it falls back to patterns (with a
    warning) instead of failing.
    """
    resolver = _Resolver(inventory)
    if offline:
        rotated, masters = resolver.patterns("--offline")
    else:
        rotated, masters = await resolver.resolve()
    rendered = await resolver.rendered(offline)
    events: list[dict[str, Any]] = []
    if inventory.eventbridge is not None:
        scope = resolver.scope([g.resource for g in [*rotated, *masters]])
        events, warnings = events_statements(inventory.eventbridge, scope)
        resolver.warnings.extend(warnings)
    bridged = [g for spec, g in zip(inventory.secrets, rotated, strict=True) if spec.bridged]
    functions: dict[str, dict[str, Any]] = {}
    notes: tuple[str, ...] = ()
    if bridged:
        specs = [s for s in inventory.secrets if s.bridged]
        scope = resolver.scope([g.resource for g in rotated])
        events.extend(bridge_statements(specs, bridged, scope))
        functions = function_policies(specs, bridged, scope)
        notes = function_notes(functions)
    document = policy_document(rotated, masters, rendered, events)
    return Policy(document, tuple(resolver.warnings), functions, notes)


@dataclass(frozen=True)
class _Found:
    """A rotated secret as Secrets Manager described it (or why it could not)."""

    spec: SecretSpec
    description: SecretDescription | None
    masterarn: str | None
    warnings: tuple[str, ...]


class _Unreachable(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class _Resolver:
    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.warnings: list[str] = []

    def scope(self, known_arns: Iterable[str]) -> Scope:
        """Patterns take the inventory's region, and what the known ARNs agree on."""
        matches = [m for m in (_SECRET_ARN.match(a) for a in known_arns) if m]
        partitions = {m.group("partition") for m in matches}
        regions = {m.group("region") for m in matches}
        accounts = {m.group("account") for m in matches}
        # Names resolve in the account of the role rotd assumes for them, when it assumes one.
        role = self.inventory.role_arn
        role_account = role.split(":")[4] if role and role.count(":") >= 5 else None
        return Scope(
            partition=partitions.pop() if len(partitions) == 1 else "aws",
            region=self.inventory.region or (regions.pop() if len(regions) == 1 else "*"),
            account=role_account or (accounts.pop() if len(accounts) == 1 else "*"),
        )

    def patterns(self, why: str) -> tuple[list[Grant], list[Grant]]:
        """Every secret by pattern, from the inventory alone."""
        specs = self.inventory.secrets
        masters = sorted({s.master_secret for s in specs if s.master_secret is not None})
        scope = self.scope([s.id for s in specs] + masters)
        self.warnings.insert(
            0,
            f"{why}: secrets are named by ARN patterns ({_pattern_words(scope)}); customer-"
            "managed KMS keys and masters named only by the masterarn inside a secret can be "
            "read from AWS only, so they are not in this policy; run rotd iam-policy where AWS "
            "can be reached for exact ARNs and keys",
        )
        return (
            [Grant(secret_resource(s.id, scope)) for s in specs],
            [Grant(secret_resource(m, scope)) for m in masters],
        )

    def rendered_ids(self) -> list[str]:
        """The secrets rendered into files that the inventory does not rotate."""
        ids = {r.secret for r in self.inventory.renders if self.inventory.find(r.secret) is None}
        return sorted(ids)

    async def rendered(self, offline: bool) -> list[Grant]:
        """Read-only grants for :meth:`rendered_ids`: exact ARNs and KMS keys when AWS answers."""
        ids = self.rendered_ids()
        scope = self.scope([s.id for s in self.inventory.secrets] + ids)
        if offline or not ids:
            return [Grant(secret_resource(i, scope)) for i in ids]
        connection = AwsConnection(
            region=self.inventory.region,
            endpoint_url=self.inventory.endpoint_url,
            profile=self.inventory.profile,
            max_attempts=2,
            connect_timeout_s=3.0,
            read_timeout_s=10.0,
        )
        if await credentials_problem(connection) is not None:
            return [Grant(secret_resource(i, scope)) for i in ids]
        try:
            async with AwsSecretStore(connection) as store, AwsKeys(connection) as keys:
                found = await asyncio.gather(*(_describe_master(store, i) for i in ids))
                key_arns = await self._key_arns(keys, found)
        except StoreError:
            return [Grant(secret_resource(i, scope)) for i in ids]
        return [
            self._grant("rendered secret", secret_id, described, key_arns, scope)
            for secret_id, described in zip(ids, found, strict=True)
        ]

    async def resolve(self) -> tuple[list[Grant], list[Grant]]:
        connection = AwsConnection(
            region=self.inventory.region,
            endpoint_url=self.inventory.endpoint_url,
            profile=self.inventory.profile,
            role_arn=self.inventory.role_arn,
            external_id=self.inventory.external_id,
            session_name=self.inventory.session_name,
            max_attempts=2,
            connect_timeout_s=3.0,
            read_timeout_s=10.0,
        )
        problem = await credentials_problem(connection)
        if problem is not None:
            return self.patterns(f"AWS cannot be reached ({problem})")
        try:
            async with AwsSecretStore(connection) as store, AwsKeys(connection) as keys:
                return await self._resolve(store, keys)
        except _Unreachable as exc:
            return self.patterns(f"AWS cannot be reached ({exc.reason})")
        except StoreError as exc:  # the client could not be made
            return self.patterns(f"AWS cannot be reached ({exc.reason})")

    async def _resolve(
        self, store: AwsSecretStore, keys: AwsKeys
    ) -> tuple[list[Grant], list[Grant]]:
        specs = self.inventory.secrets
        if not specs:
            return [], []
        slots = asyncio.Semaphore(CONCURRENCY)

        async def bounded(spec: SecretSpec) -> _Found:
            async with slots:
                return await _find(store, spec, probe=False)

        # One call first: if AWS is out of reach, say so once instead of once per secret.
        first = await _find(store, specs[0], probe=True)
        found = [first, *await asyncio.gather(*(bounded(s) for s in specs[1:]))]
        for item in found:
            self.warnings.extend(item.warnings)

        master_ids = {s.master_secret for s in specs if s.master_secret is not None}
        master_ids |= {f.masterarn for f in found if f.masterarn is not None}
        ordered_masters = sorted(master_ids)
        masters = await asyncio.gather(*(_describe_master(store, m) for m in ordered_masters))

        known = [f.description.arn for f in found if f.description is not None]
        known += [d.arn for d in masters if isinstance(d, SecretDescription)]
        scope = self.scope(known or [*(s.id for s in specs), *ordered_masters])
        key_arns = await self._key_arns(keys, [*found, *masters])

        rotated: list[Grant] = []
        for item in found:
            if item.description is None:
                rotated.append(Grant(secret_resource(item.spec.id, scope)))
            else:
                description = item.description
                rotated.append(Grant(description.arn, key_arns.get(description.kms_key_id or "")))
        master_grants = [
            self._grant("master secret", master_id, master, key_arns, scope)
            for master_id, master in zip(ordered_masters, masters, strict=True)
        ]
        return rotated, master_grants

    def _grant(
        self,
        kind: str,
        secret_id: str,
        described: SecretDescription | StoreError,
        key_arns: dict[str, str],
        scope: Scope,
    ) -> Grant:
        """The grant of a secret only read; one AWS could not describe is named by an ARN
        pattern, with a warning."""
        if isinstance(described, SecretDescription):
            return Grant(described.arn, key_arns.get(described.kms_key_id or ""))
        self.warnings.append(
            f"{kind} {secret_id!r}: {described.reason}; it is named by an ARN pattern, and its "
            "KMS key, if customer-managed, is not in this policy"
        )
        return Grant(secret_resource(secret_id, scope))

    async def _key_arns(
        self, keys: AwsKeys, items: Sequence[_Found | SecretDescription | StoreError]
    ) -> dict[str, str]:
        """KmsKeyId as Secrets Manager reports it -> the key's ARN; AWS-managed keys left out."""
        wanted: dict[str, str] = {}  # key id -> the ARN of the first secret that uses it
        for item in items:
            description = item.description if isinstance(item, _Found) else item
            if isinstance(description, SecretDescription) and description.kms_key_id:
                wanted.setdefault(description.kms_key_id, description.arn)
        ordered = sorted(wanted)
        arns = await asyncio.gather(*(self._key_arn(keys, k, wanted[k]) for k in ordered))
        return {k: arn for k, arn in zip(ordered, arns, strict=True) if arn is not None}

    async def _key_arn(self, keys: AwsKeys, key_id: str, secret_arn: str) -> str | None:
        kms_arn = _KMS_ARN.match(key_id)
        name = kms_arn.group("id") if kms_arn else key_id.removeprefix("alias/")
        is_alias = (kms_arn.group("kind") == "alias") if kms_arn else key_id.startswith("alias/")
        if is_alias and name.startswith("aws/"):
            return None  # AWS-managed (aws/secretsmanager): its key policy already allows use
        if kms_arn is not None and not is_alias:
            return key_id
        # A bare key id or alias lives in the secret's own account and region.
        owner = kms_arn or _SECRET_ARN.match(secret_arn)
        where = owner.group("partition", "region", "account") if owner else ("aws", "*", "*")
        if not is_alias:
            return f"arn:{where[0]}:kms:{where[1]}:{where[2]}:key/{key_id}"
        # Only KMS knows which key an alias names; KMS authorizes against the key, not the alias.
        try:
            key = await keys.describe(key_id)
        except AwsError as exc:
            fallback = f"arn:{where[0]}:kms:{where[1]}:{where[2]}:key/*"
            self.warnings.append(
                f"KMS key {key_id!r} of secret {secret_arn!r}: {exc.reason}; the "
                f"policy allows {fallback} (through Secrets Manager only) instead: replace it "
                "with the key's ARN"
            )
            return fallback
        return None if key.aws_managed else key.arn


async def _find(store: AwsSecretStore, spec: SecretSpec, *, probe: bool) -> _Found:
    try:
        description = await store.describe(spec.id)
    except StoreError as exc:
        if probe and exc.transient:
            raise _Unreachable(exc.reason) from None
        warning = (
            f"secret {spec.id!r}: {exc.reason}; it is named by an ARN pattern, and its KMS key "
            "and masterarn are unknown"
        )
        return _Found(spec, None, None, (warning,))
    if spec.master_secret is not None:
        return _Found(spec, description, None, ())
    # Without master_secret, rotd uses the masterarn inside the secret: read it from AWSCURRENT.
    try:
        value = await store.get_value(description.arn)
        masterarn = Credentials.parse(value.string, engine=spec.engine).masterarn
    except (StoreError, BadSecret) as exc:
        reason = exc.reason if isinstance(exc, StoreError) else str(exc)
        warning = f"secret {spec.id!r}: cannot read a masterarn from its AWSCURRENT value: {reason}"
        return _Found(spec, description, None, (warning,))
    return _Found(spec, description, masterarn, ())


async def _describe_master(store: AwsSecretStore, secret_id: str) -> SecretDescription | StoreError:
    try:
        return await store.describe(secret_id)
    except StoreError as exc:
        return exc


def _pattern_words(scope: Scope) -> str:
    account = "any account" if scope.account == "*" else f"account {scope.account}"
    region = "any region" if scope.region == "*" else f"region {scope.region}"
    return f"<name>-??????, in {region}, {account}"


# --- the I/O edge: KMS and the credential chain, over aioboto3 -----------------------------------


@dataclass(frozen=True)
class KeyInfo:
    arn: str
    aws_managed: bool


async def credentials_problem(connection: AwsConnection) -> str | None:
    """Why no AWS call can be made from here (no region, no credentials), or None."""
    try:
        session = aioboto3.Session(
            profile_name=connection.profile, region_name=aws_region(connection.region)
        )
        if session.region_name is None:
            return NO_REGION
        if await session.get_credentials() is None:
            return "no AWS credentials found"
    except BotoCoreError as exc:
        return str(exc)
    return None


class AwsKeys(AwsClients):
    """KMS's DescribeKey, to learn which key an alias names; the client is made on first use."""

    def __init__(self, connection: AwsConnection) -> None:
        super().__init__(connection)
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> AwsKeys:
        return self

    async def _kms(self) -> Any:
        async with self._lock:
            if self._client is None:
                # The inventory's endpoint_url serves KMS too when it is an emulator (moto).
                self._client = await self._stack.enter_async_context(
                    open_client("kms", self._connection, retry_mode="standard")
                )
            return self._client

    async def describe(self, key_id: str) -> KeyInfo:
        try:
            client = await self._kms()
            result = await client.describe_key(KeyId=key_id)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            category = Category.NOT_FOUND if code == "NotFoundException" else Category.PERMISSION
            hint = " (allow kms:DescribeKey to resolve it)" if "Denied" in code else ""
            reason = f"KMS refused DescribeKey ({code}){hint}: {error.get('Message', '')}"
            raise AwsError(f"kms:DescribeKey {key_id!r}", category, reason) from None
        except BotoCoreError as exc:
            raise AwsError(
                f"kms:DescribeKey {key_id!r}", Category.UNREACHABLE, f"cannot reach KMS: {exc}"
            ) from None
        metadata = result["KeyMetadata"]
        return KeyInfo(arn=metadata["Arn"], aws_managed=metadata.get("KeyManager") == "AWS")
