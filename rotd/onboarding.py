"""``rotd secret create``: a database login stored as a secret in the documented format.

Onboarding is one command per login instead of console screens: the JSON that rotd and AWS's
rotation functions read (engine, host, port, username, password, dbname, masterarn, ssl),
proven first by logging in with rotd's own engines when asked, created with its description,
tags and KMS key — or, only when asked, stored over an existing secret as a new AWSCURRENT
version, never over an unfinished rotation. The password and the secret string are registered
with the redactor before anything else happens and are never part of a message.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import yaml
from botocore.exceptions import BotoCoreError, ClientError

from rotd import templates
from rotd.engines import (
    SECRET_KEYS,
    Endpoint,
    Engine,
    Login,
    Tls,
    TlsMode,
)
from rotd.engines.registry import installed
from rotd.errors import Category, DatabaseError, EngineError, RotdError, StoreError
from rotd.inventory import Inventory, Strategy
from rotd.observability import get_logger, redactor
from rotd.secretstore import (
    CURRENT,
    PENDING,
    AwsClients,
    AwsConnection,
    AwsSecretStore,
    SecretDescription,
    open_client,
    translate,
)

log = get_logger("rotd.onboarding")

VERIFY_TIMEOUT_S = 10.0
# Secrets Manager's rule for names.
_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
_ARN_LIKE_SUFFIX = re.compile(r"-[A-Za-z0-9]{6}$")


class Refused(RotdError):
    """rotd will not store this secret; the reason says what to do instead."""

    category = Category.CONFLICT

    def __init__(self, secret: str, reason: str) -> None:
        self.secret = secret
        self.reason = reason
        super().__init__(f"secret {secret!r}: {reason}")


@dataclass(frozen=True)
class NewLogin:
    """The credentials to store. The password never appears in a repr."""

    engine: str
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    dbname: str | None = None
    masterarn: str | None = None
    ssl: bool | None = None
    # (key, template) pairs rendered into the JSON: --derive, or the inventory's derived_keys.
    derived: tuple[tuple[str, str], ...] = ()

    def document(self) -> dict[str, Any]:
        """The documented secret JSON, in its documented key order; unset keys are left out.
        Derived keys follow, rendered from the others as a rotation renders them; raise
        :class:`rotd.templates.RenderError` when a template names a key the login lacks."""
        document: dict[str, Any] = {
            "engine": self.engine,
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
        }
        optional = {"dbname": self.dbname, "masterarn": self.masterarn, "ssl": self.ssl}
        document.update({k: v for k, v in optional.items() if v is not None})
        if self.derived:
            keys = dict(document)
            if self.dbname is None:
                keys["dbname"] = installed()[self.engine].info.default_dbname
            document.update(templates.render_keys(self.derived, keys))
        return document

    def login(self) -> Login:
        """The login as rotd's engines take it, read the way a rotation reads the secret."""
        mode = {True: TlsMode.REQUIRE, False: TlsMode.DISABLE, None: TlsMode.PREFER}[self.ssl]
        dbname = self.dbname
        if dbname is None:
            dbname = installed()[self.engine].info.default_dbname
        endpoint = Endpoint(self.engine, self.host, self.port, dbname, Tls(mode))
        return Login(endpoint, self.username, self.password)


@dataclass(frozen=True)
class SecretRequest:
    name: str
    login: NewLogin
    description: str | None = None
    kms_key_id: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    overwrite: bool = False
    verify: bool = False
    verify_timeout_s: float = VERIFY_TIMEOUT_S


@dataclass(frozen=True)
class Stored:
    arn: str
    version_id: str
    replaced: bool  # a new AWSCURRENT version of an existing secret, not a new secret


def default_port(engine: str) -> int:
    return installed()[engine].info.default_port


def check_engine(name: str) -> str:
    """The name if that engine is installed and loads; ValueError listing the installed ones,
    or saying why it does not load, otherwise."""
    try:
        installed()[name]
    except EngineError as exc:
        raise ValueError(exc.reason) from None
    return name


def check_name(name: str) -> str:
    """The name if Secrets Manager accepts it; ValueError saying what is allowed otherwise."""
    if not _NAME.match(name):
        raise ValueError(
            f"{name!r} is not a valid secret name: 1 to 512 of the characters A-Z a-z 0-9 / _ + = "
            ". @ -"
        )
    return name


def name_warning(name: str) -> str | None:
    """AWS's advice against names that look like the tail of a full ARN, or None."""
    if _ARN_LIKE_SUFFIX.search(name):
        return (
            f"the name {name!r} ends with a hyphen and six characters, like the random suffix of "
            "a full ARN; AWS advises against it, since the name and an ARN become ambiguous"
        )
    return None


def parse_tag(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` as a pair; ValueError when there is no ``=`` or no key."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{text!r} is not KEY=VALUE")
    return key, value


def connection_for(
    inventory: Inventory | None,
    *,
    region: str | None,
    endpoint_url: str | None,
    profile: str | None,
) -> AwsConnection:
    """The command line's AWS settings, else the inventory's, else the standard chain."""
    return AwsConnection(
        region=region or (inventory.region if inventory else None),
        endpoint_url=endpoint_url or (inventory.endpoint_url if inventory else None),
        profile=profile or (inventory.profile if inventory else None),
        max_attempts=3,
    )


def parse_derive(value: str) -> tuple[str, str]:
    """``KEY=TEMPLATE`` of ``--derive``; raise ValueError when it is not one."""
    key, sep, source = value.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError("write KEY=TEMPLATE, e.g. url=postgresql://{{ username }}@{{ host }}/")
    if key in SECRET_KEYS:
        raise ValueError(f"{key!r} is a key of the secret itself; a derived key may not replace it")
    return key, source


def derive_problems(engine: str, derived: Sequence[tuple[str, str]]) -> list[str]:
    """What is wrong with ``--derive``'s templates for a secret of ``engine``, one line each."""
    names = templates.secret_names(engine)
    return [
        f"{key}: {p.line}:{p.column}: {p.reason}"
        for key, source in derived
        for p in templates.problems(source, names, engine=engine)
    ]


def inventory_snippet(name: str, strategy: Strategy, *, has_master: bool) -> str:
    """The YAML lines to add to a database's ``secrets`` in the inventory."""
    lines = ["# add to the inventory, under the database's secrets:"]
    if strategy is Strategy.ALTERNATING_USERS and not has_master:
        lines.append("# alternating_users needs a master login: set master_secret here or on the")
        lines.append("# database, or store the secret again with --masterarn")
    entry = yaml.safe_dump([{"id": name, "strategy": strategy.value}], sort_keys=False)
    return "\n".join(lines) + "\n" + entry


async def create(
    request: SecretRequest, connection: AwsConnection, engines: Mapping[str, Engine]
) -> Stored:
    """Store ``request`` as a secret; raise Refused (nothing stored) or StoreError.

    Without ``overwrite`` an existing secret is never touched. With it, a new AWSCURRENT version
    replaces the value (description, KMS key and tags are updated when given), unless a
    rotation is unfinished. With ``verify``, the login must work before anything is written.
    """
    redactor.add(request.login.password)
    try:
        secret_string = json.dumps(request.login.document())
    except templates.RenderError as exc:
        raise Refused(request.name, f"{exc}; nothing was stored") from None
    redactor.add(secret_string, fragments=False)  # its keys and host are no secret
    name = request.name
    async with AsyncExitStack() as stack:
        writer = await stack.enter_async_context(AwsSecretWriter(connection))
        store: AwsSecretStore | None = None
        existing: SecretDescription | None = None
        if request.overwrite:
            store = await stack.enter_async_context(AwsSecretStore(connection))
            existing = await _describe_or_none(store, name)
            unfinished = existing.unfinished_pending() if existing is not None else None
            if unfinished is not None:
                raise Refused(
                    name,
                    f"a rotation is unfinished (AWSPENDING on version {unfinished}, which is not "
                    "AWSCURRENT): when it resumes it would replace what is stored now; finish it "
                    "first (rotd rotate) or take AWSPENDING off that version",
                )
        if request.verify:
            await _verify(request, engines)
        if store is None or existing is None:
            # Without --overwrite, CreateSecret itself refuses a name that exists.
            stored = await writer.create(
                name,
                secret_string,
                description=request.description,
                kms_key_id=request.kms_key_id,
                tags=request.tags,
            )
        else:
            stored = await _overwrite(writer, store, request, existing, secret_string)
    log.info(
        "secret.stored",
        secret_id=name,
        arn=stored.arn,
        version_id=stored.version_id,
        replaced=stored.replaced,
        verified=request.verify,
    )
    return stored


async def _describe_or_none(store: AwsSecretStore, name: str) -> SecretDescription | None:
    try:
        return await store.describe(name)
    except StoreError as exc:
        if exc.category is Category.NOT_FOUND:
            return None
        raise


async def _verify(request: SecretRequest, engines: Mapping[str, Engine]) -> None:
    login = request.login.login()
    try:
        engine = engines[request.login.engine]
        async with engine.connect(login, timeout_s=request.verify_timeout_s) as session:
            await session.run_test(None)
    except DatabaseError as exc:
        raise Refused(
            request.name,
            f"--verify: cannot log in as {login.username!r} at {exc}; nothing was stored",
        ) from None


async def _overwrite(
    writer: AwsSecretWriter,
    store: AwsSecretStore,
    request: SecretRequest,
    existing: SecretDescription,
    secret_string: str,
) -> Stored:
    name = request.name
    if request.description is not None or request.kms_key_id is not None:
        await writer.update(name, description=request.description, kms_key_id=request.kms_key_id)
    if request.tags:
        await writer.tag(name, request.tags)
    current = existing.version_with(CURRENT)
    if current is not None and PENDING in existing.versions[current]:
        # A finished rotation leaves AWSPENDING on AWSCURRENT, as AWS does. Once that version
        # is no longer current the label would read as an unfinished rotation, and resuming it
        # would bring the old password back.
        await store.remove_stage(name, PENDING, current)
    return await writer.put_current(name, secret_string)


# --- the I/O edge: the Secrets Manager writes of onboarding, over aioboto3 -----------------------


class AwsSecretWriter(AwsClients):
    """CreateSecret, PutSecretValue (as AWSCURRENT), UpdateSecret and TagResource, translated."""

    def __init__(self, connection: AwsConnection) -> None:
        super().__init__(connection)
        self._client: Any = None

    async def __aenter__(self) -> AwsSecretWriter:
        try:
            self._client = await self._stack.enter_async_context(
                open_client("secretsmanager", self._connection, retry_mode="standard")
            )
        except (BotoCoreError, ClientError) as exc:
            await self._stack.aclose()
            raise translate(exc, "-", "connect") from None
        return self

    async def _call(self, operation: str, name: str, **kwargs: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await getattr(self._client, operation)(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            error = translate(exc, name, operation)
            if operation == "create_secret" and error.category is Category.CONFLICT:
                error = StoreError(
                    name,
                    operation,
                    error.category,
                    f"{error.reason}; nothing was changed: pass --overwrite to store this login "
                    "as its new AWSCURRENT version",
                )
            raise error from None
        return result

    async def create(
        self,
        name: str,
        string: str,
        *,
        description: str | None,
        kms_key_id: str | None,
        tags: Sequence[tuple[str, str]],
    ) -> Stored:
        kwargs: dict[str, Any] = {
            "Name": name,
            "SecretString": string,
            "ClientRequestToken": str(uuid.uuid4()),
        }
        if description is not None:
            kwargs["Description"] = description
        if kms_key_id is not None:
            kwargs["KmsKeyId"] = kms_key_id
        if tags:
            kwargs["Tags"] = [{"Key": k, "Value": v} for k, v in tags]
        result = await self._call("create_secret", name, **kwargs)
        return Stored(arn=result["ARN"], version_id=result["VersionId"], replaced=False)

    async def put_current(self, name: str, string: str) -> Stored:
        result = await self._call(
            "put_secret_value",
            name,
            SecretId=name,
            SecretString=string,
            ClientRequestToken=str(uuid.uuid4()),
            VersionStages=[CURRENT],
        )
        return Stored(arn=result["ARN"], version_id=result["VersionId"], replaced=True)

    async def update(self, name: str, *, description: str | None, kms_key_id: str | None) -> None:
        kwargs: dict[str, Any] = {"SecretId": name}
        if description is not None:
            kwargs["Description"] = description
        if kms_key_id is not None:
            kwargs["KmsKeyId"] = kms_key_id
        await self._call("update_secret", name, **kwargs)

    async def tag(self, name: str, tags: Sequence[tuple[str, str]]) -> None:
        await self._call(
            "tag_resource", name, SecretId=name, Tags=[{"Key": k, "Value": v} for k, v in tags]
        )
