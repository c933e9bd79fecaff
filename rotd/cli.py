"""The ``rotd`` commands, and the only place that exits the process.

Exit codes: 0 everything asked for succeeded; 1 a rotation (or check) failed; 2 the command
line is wrong (unknown option or secret id); 78 (EX_CONFIG) the inventory is invalid.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from rotd import inventory as inventory_module
from rotd.daemon import Daemon, aws_connection
from rotd.engines import all_engines
from rotd.errors import ConfigErrors
from rotd.inventory import Inventory, SecretSpec
from rotd.observability import configure_logging
from rotd.protocol import Outcome
from rotd.runner import Runner
from rotd.secretstore import AwsSecretStore
from rotd.status import survey

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
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


def load_or_exit(path: str) -> Inventory:
    """Load the inventory, or print every error as FILE:LINE:COL and exit 78."""
    try:
        loaded = inventory_module.load(path)
    except ConfigErrors as exc:
        for error in exc.errors:
            click.echo(str(error), err=True)
        click.echo(f"{path}: {len(exc.errors)} error(s); nothing was done", err=True)
        _exit(EXIT_CONFIG)
    for warning in loaded.warnings:
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
        click.echo(json.dumps(outcome_json(outcome)) if as_json else outcome_line(outcome))
    _exit(EXIT_OK if all(o.ok for o in outcomes) else EXIT_FAILED)


@cli.command()
@CONFIG_OPTION
@LOG_LEVEL_OPTION
def run(config_path: str, log_level: str) -> None:
    """Run the rotation daemon: rotate every secret on its schedule until stopped.

    SIGHUP reloads the inventory, SIGTERM or SIGINT drains rotations in flight and exits 0;
    a second SIGINT exits at once (130).
    """
    configure_logging(level=log_level)
    loaded = load_or_exit(config_path)
    _exit(asyncio.run(Daemon(loaded).run()))


@cli.command()
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object per secret on stdout.")
@LOG_LEVEL_OPTION
def status(config_path: str, as_json: bool, log_level: str) -> None:
    """Show every secret's rotation state from Secrets Manager; exit 1 if any has a problem."""
    configure_logging(level=log_level)
    loaded = load_or_exit(config_path)

    async def read() -> list[Any]:
        async with AwsSecretStore(aws_connection(loaded)) as store:
            return await survey(loaded, store)

    reports = asyncio.run(read())
    for report in reports:
        click.echo(json.dumps(report.as_dict()) if as_json else report.line())
    _exit(EXIT_FAILED if any(r.problem for r in reports) else EXIT_OK)


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
    async with AwsSecretStore(aws_connection(loaded)) as store:
        runner = Runner(
            store,
            all_engines(),
            max_concurrent=loaded.max_concurrent,
            max_concurrent_per_host=loaded.max_concurrent_per_host,
        )
        return await runner.rotate_all(specs)


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
    return result


def outcome_line(outcome: Outcome) -> str:
    head = f"{'ok' if outcome.ok else 'FAILED':6} {outcome.secret_id}  {outcome.strategy}"
    if outcome.error is not None:
        error = outcome.error
        return f"{head}  {error.step}: {error.reason} [{error.category}]  {outcome.duration_s:.2f}s"
    users = f"{outcome.old_username} -> {outcome.new_username}"
    resumed = "  (resumed)" if outcome.resumed else ""
    return f"{head}  {users}  version {outcome.version_id}  {outcome.duration_s:.2f}s{resumed}"


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
