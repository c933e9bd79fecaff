"""The ``rotd`` commands, and the only place that exits the process.

Exit codes: 0 everything asked for succeeded; 1 a rotation (or check) failed; 2 the command
line is wrong (unknown option or secret id); 73 (EX_CANTCREAT) an output file cannot be
written; 78 (EX_CONFIG) the inventory is invalid.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, NoReturn

import click

from rotd import inventory as inventory_module
from rotd.engines import all_engines
from rotd.errors import ConfigErrors, RotdError
from rotd.inventory import Inventory, SecretSpec, Strategy
from rotd.observability import configure_logging, get_logger, redactor

if TYPE_CHECKING:
    from rotd.accounts import Stores
    from rotd.events import EventPublisher
    from rotd.protocol import Outcome
    from rotd.secretstore import AwsSecretStore

# The AWS and database libraries take a second or more to import: commands import what they
# use, so that `rotd validate` (and `systemctl reload`, which runs it) stays quick.

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE from sysexits.h: the daemon asked cannot be reached
EXIT_CANTCREAT = 73  # EX_CANTCREAT from sysexits.h: an output file cannot be written
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h

CONFIG_OPTION = click.option(
    "-c",
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The inventory file (YAML).",
)
LOG_LEVEL_OPTION = click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="The lowest level of log events written to standard error.",
)


def _exit(code: int) -> NoReturn:
    sys.exit(code)


def load_or_exit(path: str, *, log_warnings: bool = False) -> Inventory:
    """Load the inventory, or print every error as FILE:LINE:COL and exit 78.

    Warnings are printed, or logged as ``inventory.warning`` events for the daemon."""
    try:
        loaded = inventory_module.load(path)
    except ConfigErrors as exc:
        for error in exc.errors:
            click.echo(str(error), err=True)
        click.echo(f"{path}: {len(exc.errors)} error(s); nothing was done", err=True)
        _exit(EXIT_CONFIG)
    for warning in loaded.warnings:
        if log_warnings:
            get_logger("rotd.inventory").warning("inventory.warning", warning=warning)
        else:
            click.echo(f"warning: {warning}", err=True)
    return loaded


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rotd")
def cli() -> None:
    """rotd rotates database credentials kept in AWS Secrets Manager."""


@cli.command()
@CONFIG_OPTION
def validate(config_path: str) -> None:
    """Check an inventory file offline; print every problem as FILE:LINE:COL."""
    loaded = load_or_exit(config_path)
    click.echo(loaded.summary())


@cli.command(name="rotate")
@CONFIG_OPTION
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Rotate every secret in the inventory.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per secret on stdout.")
@LOG_LEVEL_OPTION
def rotate_command(
    config_path: str, ids: tuple[str, ...], all_: bool, as_json: bool, log_level: str
) -> None:
    """Rotate the named secrets (or --all) now, whatever their schedule."""
    configure_logging(level=log_level)
    loaded = load_or_exit(config_path)
    specs = select(loaded, ids, all_)
    outcomes = asyncio.run(_rotate(loaded, specs))
    for outcome in outcomes:
        click.echo(
            redactor.scrub(json.dumps(outcome_json(outcome)) if as_json else outcome_line(outcome))
        )
    _exit(EXIT_OK if all(o.ok for o in outcomes) else EXIT_FAILED)


@cli.command()
@CONFIG_OPTION
@LOG_LEVEL_OPTION
def run(config_path: str, log_level: str) -> None:
    """Run the rotation daemon: rotate every secret on its schedule until stopped.

    SIGHUP reloads the inventory, SIGTERM or SIGINT drains rotations in flight and exits 0;
    a second SIGINT exits at once (130).
    """
    from rotd.daemon import Daemon

    configure_logging(level=log_level)
    loaded = load_or_exit(config_path, log_warnings=True)
    _exit(asyncio.run(Daemon(loaded).run()))


@cli.command(name="render")
@CONFIG_OPTION
@click.option("--once", is_flag=True, help="Write every file now and exit.")
@LOG_LEVEL_OPTION
def render_command(config_path: str, once: bool, log_level: str) -> None:
    """Write the inventory's render entries from AWSCURRENT; rotate nothing.

    With --once, write every file now and exit 1 if any failed (an init container, a cron
    job). Without it, keep them current as `rotd run` does until SIGTERM or SIGINT; SIGHUP
    reloads the entries.
    """
    from rotd import render

    configure_logging(level=log_level)
    loaded = load_or_exit(config_path, log_warnings=not once)
    if not loaded.renders:
        raise click.ClickException(f"{loaded.path}: no render entries, so nothing to write")
    try:
        if not once:
            _exit(asyncio.run(render.serve(loaded, inventory_module.load)))
        results = asyncio.run(render.render_once(loaded))
    except RotdError as exc:  # no region, no credentials: nothing could be read
        raise click.ClickException(redactor.scrub(str(exc))) from None
    for result in results:
        state = "written" if result.changed else "unchanged"
        if not result.ok:
            state = f"FAILED {result.stage}: {result.error}"
        click.echo(redactor.scrub(f"{result.path}  <- {result.secret}  {state}"))
    _exit(EXIT_OK if all(r.ok for r in results) else EXIT_FAILED)


@cli.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="The inventory file (YAML); read Secrets Manager for its secrets.",
)
@click.option(
    "--daemon",
    "daemon_url",
    metavar="URL",
    help="Ask a running `rotd run` instead, at its daemon.listen address "
    "(http://HOST:PORT): no call to Secrets Manager.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per secret on stdout.")
@LOG_LEVEL_OPTION
def status(config_path: str | None, daemon_url: str | None, as_json: bool, log_level: str) -> None:
    """Show every secret's rotation state from Secrets Manager, and whether each rendered file
    is current, or the daemon's view of its secrets from a running daemon (--daemon); exit 1
    if any has a problem, 69 if the daemon cannot be reached."""
    configure_logging(level=log_level)
    if (config_path is None) == (daemon_url is None):
        raise click.UsageError("give either -c INVENTORY or --daemon URL")
    if daemon_url is not None:
        _status_from_daemon(daemon_url, as_json)
    assert config_path is not None
    loaded = load_or_exit(config_path)

    async def read() -> list[Any]:
        from rotd.accounts import Stores
        from rotd.render import file_report
        from rotd.status import survey

        async with Stores(loaded) as store:
            files = await asyncio.gather(*(file_report(r, store) for r in loaded.renders))
            return [*await survey(loaded, store), *files]

    reports = asyncio.run(read())
    for report in reports:
        click.echo(redactor.scrub(json.dumps(report.as_dict()) if as_json else report.line()))
    _exit(EXIT_FAILED if any(r.problem for r in reports) else EXIT_OK)


def _status_from_daemon(url: str, as_json: bool) -> NoReturn:
    from rotd.daemonstatus import DaemonUnreachable, fetch, reports

    try:
        document = fetch(url)
    except DaemonUnreachable as exc:
        click.echo(f"error: {exc}", err=True)
        _exit(EXIT_UNAVAILABLE)
    rows = reports(document)
    for report in rows:
        click.echo(redactor.scrub(json.dumps(report.as_dict()) if as_json else report.line()))
    if not as_json:
        daemon, inventory = document["daemon"], document["inventory"]
        health = "healthy" if daemon["healthy"] else f"UNHEALTHY: {daemon['health_problem']}"
        click.echo(
            f"daemon {health}; {daemon['summary']}; inventory {inventory['path']} "
            f"loaded {inventory['loaded_at']}"
        )
        for breaker in document["breakers"]:
            click.echo(
                f"host {breaker['host']}: breaker OPEN after {breaker['failures']} failure(s) "
                f"({breaker['reason']}); next probe {breaker['next_probe']}"
            )
    _exit(EXIT_FAILED if any(r.problem for r in rows) else EXIT_OK)


@cli.command(name="doctor")
@CONFIG_OPTION
@click.argument("ids", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per check on stdout.")
@LOG_LEVEL_OPTION
def doctor_command(config_path: str, ids: tuple[str, ...], as_json: bool, log_level: str) -> None:
    """Check what rotating the named secrets (default: all) needs, changing nothing.

    One line per check: ok, warn or FAIL, the secret, the check, and for a failure what to do.
    Exits 1 if a check failed (warnings do not count).
    """
    from rotd.doctor import diagnose
    from rotd.secretstore import connection_for

    configure_logging(level=log_level)
    loaded = load_or_exit(config_path)
    specs = select(loaded, ids, not ids)
    checks = asyncio.run(diagnose(loaded, specs, connection_for(loaded)))
    for check in checks:
        click.echo(redactor.scrub(json.dumps(check.as_dict()) if as_json else check.line()))
    _exit(EXIT_FAILED if any(c.failed for c in checks) else EXIT_OK)


@cli.command()
@click.option("--pg-port", default=5432, show_default=True, help="Local PostgreSQL port.")
@click.option("--mysql-port", default=3306, show_default=True, help="Local MariaDB/MySQL port.")
@click.option("--listen-port", default=9464, show_default=True, help="Port for /metrics.")
@LOG_LEVEL_OPTION
def demo(pg_port: int, mysql_port: int, listen_port: int, log_level: str) -> None:
    """Watch rotd rotate demo logins in the local PostgreSQL and MariaDB once a minute.

    Uses a local Secrets Manager emulator (moto); removes everything it made on Ctrl-C.
    """
    from rotd.demo import DemoServers, run_demo

    configure_logging(level=log_level)
    servers = DemoServers(
        postgres=("127.0.0.1", pg_port, "postgres"),
        mysql=("127.0.0.1", mysql_port, "root"),
        listen_port=listen_port,
    )
    _exit(asyncio.run(run_demo(servers)))


@cli.command(name="iam-policy")
@CONFIG_OPTION
@click.option("--offline", is_flag=True, help="Call no AWS: name secrets by ARN patterns.")
@LOG_LEVEL_OPTION
def iam_policy_command(config_path: str, offline: bool, log_level: str) -> None:
    """Print the least-privilege IAM policy (JSON) that rotating the inventory needs.

    Names are resolved to ARNs, and KMS keys found, when AWS can be reached; otherwise ARN
    patterns are used and a warning says so on standard error. An inventory that assumes
    roles (aws.role_arn) gets one policy per identity: a JSON object keyed "base" (rotd's own
    identity, with sts:AssumeRole on each role) and by role ARN. Bridged secrets add, keyed
    "bridge-function:<ARN>", the policy of each bridge function's execution role.
    """
    from rotd.iampolicy import Policy, build_policy
    from rotd.rolepolicies import Policies, build_policies, uses_roles

    configure_logging(level=log_level)
    loaded = load_or_exit(config_path)
    if not loaded.secrets and not loaded.renders:
        raise click.ClickException(f"{loaded.path}: no secrets, so no policy to print")
    policy: Policy | Policies
    if uses_roles(loaded):
        policy = asyncio.run(build_policies(loaded, offline=offline))
    else:
        policy = asyncio.run(build_policy(loaded, offline=offline))
    for warning in policy.warnings:
        click.echo(f"warning: {warning}", err=True)
    for note in policy.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(policy.text())
    _exit(EXIT_OK)


@cli.group()
def secret() -> None:
    """Store database logins in Secrets Manager in the format rotd rotates."""


def _option_value(check: Callable[[str], Any]) -> Callable[..., Any]:
    """A click callback that turns check's ValueError into a usage error (exit 2)."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        try:
            if isinstance(value, tuple):
                return tuple(check(v) for v in value)
            return check(value) if value is not None else None
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None

    return callback


def _onboarding() -> Any:
    from rotd import onboarding

    return onboarding


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


@secret.command(name="create")
@click.option(
    "--name", required=True, callback=_option_value(lambda v: _onboarding().check_name(v))
)
@click.option(
    "--engine",
    required=True,
    callback=_option_value(lambda v: _onboarding().check_engine(v)),
    help="An installed engine: postgres, aurora-postgresql, mysql, aurora-mysql, mariadb, ...",
)
@click.option("--host", required=True, callback=_option_value(_not_blank))
@click.option("--port", type=click.IntRange(1, 65535), help="Default: 5432 or 3306 by engine.")
@click.option("--username", required=True, callback=_option_value(_not_blank))
@click.option("--dbname", callback=_option_value(_not_blank))
@click.option("--masterarn", callback=_option_value(_not_blank), help="The master's secret.")
@click.option("--ssl/--no-ssl", default=None, help="Store ssl: true or false (default: absent).")
@click.option(
    "--strategy",
    type=click.Choice([s.value for s in Strategy]),
    default=Strategy.SINGLE_USER.value,
    show_default=True,
    help="The strategy in the printed inventory snippet.",
)
@click.option("--description")
@click.option("--kms-key-id", help="A customer-managed KMS key (id, ARN or alias).")
@click.option(
    "--tags",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_option_value(lambda v: _onboarding().parse_tag(v)),
    help="A tag for the secret; repeatable.",
)
@click.option(
    "--derive",
    multiple=True,
    metavar="KEY=TEMPLATE",
    callback=_option_value(lambda v: _onboarding().parse_derive(v)),
    help="A derived key rendered from the others (docs/inventory.md: Derived keys); "
    "repeatable. With -c the inventory's derived_keys are added too.",
)
@click.option("--verify", is_flag=True, help="Log in with the login first; store nothing if not.")
@click.option("--overwrite", is_flag=True, help="Store a new AWSCURRENT version if it exists.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Take the aws settings from this inventory.",
)
@click.option("--region")
@click.option("--endpoint-url", help="A Secrets Manager compatible endpoint.")
@click.option("--profile", help="A named AWS profile.")
@LOG_LEVEL_OPTION
def secret_create(
    name: str,
    engine: str,
    host: str,
    port: int | None,
    username: str,
    dbname: str | None,
    masterarn: str | None,
    ssl: bool | None,
    strategy: str,
    description: str | None,
    kms_key_id: str | None,
    tags: tuple[tuple[str, str], ...],
    derive: tuple[tuple[str, str], ...],
    verify: bool,
    overwrite: bool,
    password_stdin: bool,
    config_path: str | None,
    region: str | None,
    endpoint_url: str | None,
    profile: str | None,
    log_level: str,
) -> None:
    """Store a database login as a secret; print its ARN and the inventory lines to add.

    The secret holds the documented JSON (engine, host, port, username, password, dbname,
    masterarn, ssl). The password comes from standard input (--password-stdin) or a hidden
    prompt, never from the command line.
    """
    from rotd import onboarding

    configure_logging(level=log_level)
    loaded = load_or_exit(config_path) if config_path else None
    if len(dict(tags)) != len(tags):
        raise click.BadParameter("a tag key is given twice", param_hint="--tags")
    warning = onboarding.name_warning(name)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    derived = _derived_keys(loaded, name, derive)
    problems = onboarding.derive_problems(engine, derived)
    if problems:
        raise click.BadParameter("; ".join(problems), param_hint="--derive")
    password = _read_password(password_stdin)
    login = onboarding.NewLogin(
        engine=engine,
        host=host,
        port=port if port is not None else onboarding.default_port(engine),
        username=username,
        password=password,
        dbname=dbname,
        masterarn=masterarn,
        ssl=ssl,
        derived=derived,
    )
    request = onboarding.SecretRequest(
        name=name,
        login=login,
        description=description,
        kms_key_id=kms_key_id,
        tags=tags,
        overwrite=overwrite,
        verify=verify,
    )
    connection = onboarding.connection_for(
        loaded, region=region, endpoint_url=endpoint_url, profile=profile
    )
    try:
        stored = asyncio.run(onboarding.create(request, connection, all_engines()))
    except RotdError as exc:
        raise click.ClickException(redactor.scrub(str(exc))) from None
    click.echo(stored.arn)
    snippet = onboarding.inventory_snippet(name, Strategy(strategy), has_master=bool(masterarn))
    click.echo(snippet, nl=False)
    _exit(EXIT_OK)


def _derived_keys(
    loaded: Inventory | None, name: str, given: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    """The derived keys to store: the inventory's for this secret (its layered ones when it
    lists the secret, else its defaults'), then ``--derive``'s, which win key by key."""
    keys: dict[str, str] = {}
    if loaded is not None:
        spec = loaded.find(name)
        keys.update(spec.derived_keys if spec is not None else loaded.derived_keys)
    keys.update(given)
    return tuple(keys.items())


def _read_password(from_stdin: bool) -> str:
    """One line of standard input, or a hidden prompt (confirmed) on a terminal."""
    if from_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    elif sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        raise click.UsageError(
            "standard input is not a terminal: pass --password-stdin to read the password from it"
        )
    if not password:
        raise click.UsageError("the password is empty; nothing was stored")
    return password


def select(loaded: Inventory, ids: Sequence[str], all_: bool) -> list[SecretSpec]:
    """The secrets named on the command line, or every one with ``--all``; exit 2 otherwise."""
    if all_ and ids:
        raise click.UsageError("give secret ids or --all, not both")
    if all_:
        return list(loaded.secrets)
    if not ids:
        raise click.UsageError("name the secrets to rotate, or pass --all")
    chosen: list[SecretSpec] = []
    unknown: list[str] = []
    for key in ids:
        spec = loaded.find(key)
        if spec is None:
            unknown.append(key)
        elif spec not in chosen:
            chosen.append(spec)
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise click.UsageError(f"not in the inventory {loaded.path}: {names}")
    return chosen


async def _rotate(loaded: Inventory, specs: list[SecretSpec]) -> list[Outcome]:
    from rotd.accounts import Stores

    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(Stores(loaded))
        events = None
        if loaded.eventbridge is not None:
            from rotd.events import FLUSH_S, EventPublisher

            events = await stack.enter_async_context(EventPublisher(loaded, loaded.eventbridge))
        outcomes = await rotate_batch(store, loaded, specs, events=events)
        if events is not None:
            # The rotations are done whatever happens here; a dead bus costs FLUSH_S at most.
            await events.flush(FLUSH_S)
        return outcomes


async def rotate_batch(
    store: Stores | AwsSecretStore,
    loaded: Inventory,
    specs: list[SecretSpec],
    *,
    events: EventPublisher | None = None,
) -> list[Outcome]:
    """``rotd rotate``: refuse the secrets that share a login, rotate the others."""
    from rotd.logins import shared_logins
    from rotd.protocol import start_bridged
    from rotd.runner import Runner

    runner = Runner(
        store,
        all_engines(),
        max_concurrent=loaded.max_concurrent,
        max_concurrent_per_host=loaded.max_concurrent_per_host,
    )
    runner.events = events
    # Against the whole inventory: rotating one secret of a pair breaks the other. Each
    # rotation then reads the version this survey read: from memory, not again from AWS.
    store.keep_versions()
    runner.shared_logins = await shared_logins(loaded.secrets, store)
    # A bridged secret's rotation is Secrets Manager's to start: rotd asks it to.
    outcomes = dict(
        zip(
            [spec.id for spec in specs if spec.bridged],
            await asyncio.gather(*(start_bridged(s, store) for s in specs if s.bridged)),
            strict=True,
        )
    )
    rotated = await runner.rotate_all([spec for spec in specs if not spec.bridged])
    outcomes.update((outcome.secret_id, outcome) for outcome in rotated)
    return [outcomes[spec.id] for spec in specs]


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    result: dict[str, Any] = {
        "outcome": outcome.label,
        "secret_id": outcome.secret_id,
        "arn": outcome.arn,
        "database": outcome.database,
        "engine": outcome.engine,
        "strategy": str(outcome.strategy),
        "old_username": outcome.old_username,
        "new_username": outcome.new_username,
        "version_id": outcome.version_id,
        "duration_s": outcome.duration_s,
    }
    if outcome.error is not None:
        result["step"] = outcome.error.step
        result["category"] = str(outcome.error.category)
        result["error"] = outcome.error.reason
    if outcome.skip_reason is not None:
        result["reason"] = outcome.skip_reason
    return result


def outcome_line(outcome: Outcome) -> str:
    head = f"{'ok' if outcome.ok else 'FAILED':6} {outcome.secret_id}  {outcome.strategy}"
    if outcome.error is not None:
        error = outcome.error
        return f"{head}  {error.step}: {error.reason} [{error.category}]  {outcome.duration_s:.2f}s"
    if outcome.started:
        return (
            f"{head}  rotation started by Secrets Manager: version {outcome.version_id}; its "
            "bridge function hands the steps to `rotd run`"
        )
    users = f"{outcome.old_username} -> {outcome.new_username}"
    resumed = "  (resumed)" if outcome.resumed else ""
    if outcome.skip_reason is not None:
        resumed = f"  (skipped: {outcome.skip_reason})"
    return f"{head}  {users}  version {outcome.version_id}  {outcome.duration_s:.2f}s{resumed}"


@cli.group()
def bridge() -> None:
    """The bridge: Secrets Manager's native rotation, with rotd doing the steps."""


@bridge.command(name="package")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, writable=True),
    help="Where to write the rotation function's archive (a .zip, replaced if it exists).",
)
def bridge_package(output: str) -> None:
    """Build the bridge rotation function's deployment archive; print its CodeSha256."""
    from rotd.bridge import package

    try:
        archive = package.build(output)
    except OSError as exc:
        click.echo(f"cannot write {output}: {exc.strerror or exc}", err=True)
        _exit(EXIT_CANTCREAT)
    click.echo(f"archive     {archive.path.resolve()}")
    click.echo(f"size        {archive.size} bytes")
    click.echo(f"CodeSha256  {archive.code_sha256}")
    click.echo(f"handler     {package.HANDLER}")
    click.echo(f"runtime     {package.RUNTIME}")
    _exit(EXIT_OK)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.UsageError as exc:
        exc.show()
        _exit(EXIT_USAGE)
    except click.ClickException as exc:
        exc.show()
        _exit(EXIT_FAILED)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        _exit(EXIT_FAILED)
    _exit(EXIT_OK)
