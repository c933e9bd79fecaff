"""Rendering AWSCURRENT into files, against moto's server: content, mode, atomicity, failures,
``on_change``, and what reaches the logs."""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rotd.inventory import RenderSpec
from rotd.render import Renderer
from rotd.secretstore import AwsConnection, AwsSecretStore
from rotd.testing.kit import processed_events
from tests.fixtures.aws import MotoServer, Secrets
from tests.fixtures.deadlines import until

Event = dict[str, Any]
PASSWORD = "Render-pass/1:@?"
LOGIN = {"engine": "postgres", "host": "db.internal", "port": 5432, "username": "app"}


@pytest.fixture
def events() -> Iterator[list[Event]]:
    captured: list[Event] = []
    with processed_events(lambda _logger, _name, event: captured.append(event)):
        yield captured


def named(events: list[Event], name: str) -> list[Event]:
    return [e for e in events if e["event"] == name]


@pytest.fixture
async def store(moto: MotoServer) -> AsyncIterator[AwsSecretStore]:
    connection = AwsConnection(region=moto.region, endpoint_url=moto.endpoint_url)
    async with AwsSecretStore(connection) as opened:
        yield opened


def entry(secret: str, path: Path, **changes: Any) -> RenderSpec:
    spec = RenderSpec(
        secret=secret,
        path=str(path),
        template=None,
        mode=0o600,
        owner=None,
        group=None,
        on_change=None,
        on_change_timeout=timedelta(seconds=10),
        refresh=timedelta(minutes=5),
    )
    return replace(spec, **changes)


async def put_current(secrets: Secrets, name: str, value: dict[str, Any]) -> None:
    """What another process's rotation leaves: a new version labelled AWSCURRENT."""
    async with secrets.client() as client:
        await client.put_secret_value(SecretId=name, SecretString=json.dumps(value))


ENV_TEMPLATE = (
    "DATABASE_URL=postgresql://{{ username }}:{{ password | urlencode }}@{{ host }}:{{ port }}\n"
)


async def test_a_template_renders_the_current_value_with_the_mode_set_before_writing(
    secrets: Secrets, store: AwsSecretStore, tmp_path: Path, events: list[Event]
) -> None:
    name = await secrets.create("env", {**LOGIN, "password": "Old-pass-1"})
    await put_current(secrets, name, {**LOGIN, "password": PASSWORD})  # moto: not the first
    path = tmp_path / "orders.env"
    spec = entry(name, path, template=ENV_TEMPLATE, mode=0o640)
    renderer = Renderer(store, [spec])

    (result,) = await renderer.render_all()

    assert result.ok
    assert result.changed
    assert path.read_text() == (
        "DATABASE_URL=postgresql://app:Render-pass%2F1%3A%40%3F@db.internal:5432\n"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["orders.env"]  # no temporary file left
    (written,) = named(events, "render.written")
    assert written["path"] == str(path)
    assert written["version_id"] == result.version_id
    text = json.dumps(events)
    assert PASSWORD not in text
    assert "Render-pass%2F1" not in text

    before = path.stat().st_mtime_ns, path.stat().st_ino
    (again,) = await renderer.render_all()
    assert again.ok
    assert not again.changed
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == before  # not written again


async def test_without_a_template_the_file_is_the_secret_string(
    secrets: Secrets, store: AwsSecretStore, tmp_path: Path
) -> None:
    value = {**LOGIN, "password": PASSWORD}
    name = await secrets.create("json", value)
    path = tmp_path / "secret.json"
    (result,) = await Renderer(store, [entry(name, path)]).render_all()
    assert result.ok
    assert json.loads(path.read_text()) == value
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_failure_leaves_the_previous_file_and_is_reported(
    secrets: Secrets, store: AwsSecretStore, tmp_path: Path, events: list[Event]
) -> None:
    name = await secrets.create("fail", {**LOGIN, "password": PASSWORD})
    path = tmp_path / "app.env"
    renderer = Renderer(store, [entry(name, path, template=ENV_TEMPLATE)])
    results: list[Any] = []
    renderer.on_result = results.append
    assert (await renderer.render_all())[0].ok
    good = path.read_bytes()

    # A template naming a key the secret lacks.
    bad_template = entry(name, path, template="URL={{ url }}\n")
    failed = await Renderer(store, [bad_template]).render(bad_template)
    assert not failed.ok
    assert failed.stage == "template"
    assert "'url' is undefined" in (failed.error or "")
    assert path.read_bytes() == good

    # A secret that cannot be read.
    missing = entry(secrets.name("never-created"), path)
    failed = await renderer.render(missing)
    assert not failed.ok
    assert failed.stage == "read"
    assert path.read_bytes() == good

    # A directory that cannot be written: here, one that is a file.
    blocked = entry(name, tmp_path / "app.env" / "inside.env")
    failed = await renderer.render(blocked)
    assert not failed.ok
    assert failed.stage == "write"
    assert path.read_bytes() == good

    reported = named(events, "render.failed")
    assert [e["stage"] for e in reported] == ["template", "read", "write"]
    assert all("previous file is left in place" in e["action"] for e in reported)
    assert [r.ok for r in results] == [True, False, False]
    assert PASSWORD not in json.dumps(events)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.env"]


async def test_on_change_runs_once_per_change_without_the_secret(
    secrets: Secrets, store: AwsSecretStore, tmp_path: Path, events: list[Event]
) -> None:
    name = await secrets.create("hook", {**LOGIN, "password": PASSWORD})
    path = tmp_path / "app.env"
    calls = tmp_path / "calls"
    script = (
        "import os, sys; "
        f"open({str(calls)!r}, 'a').write(repr([sys.argv[1:], os.environ['ROTD_VERSION_ID'], "
        "open(os.environ['ROTD_RENDER_PATH']).read()]) + chr(10))"
    )
    spec = entry(
        name, path, template=ENV_TEMPLATE, on_change=(sys.executable, "-c", script, "reload")
    )
    renderer = Renderer(store, [spec])

    await renderer.render_all()
    await renderer.render_all()  # unchanged: no call
    await put_current(secrets, name, {**LOGIN, "password": "Second-pass-2"})
    await renderer.render_all()
    await renderer.render_all()

    lines = calls.read_text().splitlines()
    assert len(lines) == 2
    assert "Render-pass%2F1" in lines[0]
    assert "Second-pass-2" in lines[1]
    assert all("['reload']" in line for line in lines)
    assert len(named(events, "render.on_change_finished")) == 2
    text = json.dumps(events)
    assert PASSWORD not in text
    assert "Second-pass-2" not in text


async def test_a_failed_on_change_is_run_again_at_the_next_render(
    secrets: Secrets, store: AwsSecretStore, tmp_path: Path, events: list[Event]
) -> None:
    name = await secrets.create("retry", {**LOGIN, "password": PASSWORD})
    path = tmp_path / "app.env"
    flag = tmp_path / "fixed"
    script = f"import os, sys; sys.exit(0 if os.path.exists({str(flag)!r}) else 3)"
    spec = entry(name, path, on_change=(sys.executable, "-c", script))
    renderer = Renderer(store, [spec])

    assert (await renderer.render_all())[0].ok
    (failed,) = named(events, "render.on_change_failed")
    assert failed["error"] == "exited with status 3"
    flag.touch()
    await renderer.render_all()
    assert len(named(events, "render.on_change_finished")) == 1
    await renderer.render_all()
    assert len(named(events, "render.on_change_finished")) == 1


async def test_readers_racing_the_writer_only_see_whole_files(
    secrets: Secrets, store: AwsSecretStore, tmp_path: Path
) -> None:
    """Every read of the file, while it is replaced again and again, is one whole version."""
    name = await secrets.create("race", {**LOGIN, "password": "Race-pass-0"})
    path = tmp_path / "race.json"
    # Large enough that a write takes more than one system call's worth of time to land.
    template = "{% for _ in range(5000) %}{{ password }}{% endfor %}\n"
    spec = entry(name, path, template=template)
    renderer = Renderer(store, [spec])
    assert (await renderer.render_all())[0].ok
    wholes = {f"Race-pass-{n}" * 5000 + "\n" for n in range(16)}

    seen: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(path.read_text())
            except FileNotFoundError:
                seen.append("<missing>")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(1, 16):
            await put_current(secrets, name, {**LOGIN, "password": f"Race-pass-{n}"})
            assert (await renderer.render(spec)).changed
    finally:
        stop.set()
        reader.join()

    assert len(seen) > 15
    assert len({s for s in seen if s not in wholes}) == 0, "a reader saw a partial file"
    assert len(set(seen)) > 2, "the reader should have seen several versions"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
async def test_owner_and_group_are_set_when_given(
    secrets: Secrets, store: AwsSecretStore, tmp_path: Path
) -> None:
    name = await secrets.create("owner", {**LOGIN, "password": PASSWORD})
    path = tmp_path / "owned.env"
    spec = entry(name, path, owner=65534, group=65534, mode=0o440)
    assert (await Renderer(store, [spec]).render_all())[0].ok
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o440)


async def test_doctor_checks_the_directory_the_secret_and_the_template(
    secrets: Secrets, moto: MotoServer, tmp_path: Path
) -> None:
    from rotd.doctor import diagnose
    from rotd.inventory import loads
    from rotd.secretstore import connection_for

    name = await secrets.create("doctor", {**LOGIN, "password": PASSWORD})
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    text = json.dumps(
        {
            "aws": {"endpoint_url": moto.endpoint_url, "region": moto.region},
            "render": [
                {"secret": name, "path": str(tmp_path / "good.env"), "template": ENV_TEMPLATE},
                {"secret": name, "path": str(blocked / "app.env"), "template": "{{ url }}"},
                {"secret": secrets.name("absent"), "path": str(tmp_path / "absent.json")},
            ],
        }
    )
    loaded = loads(text, "inv.yaml")
    checks = await diagnose(loaded, loaded.secrets, connection_for(loaded))
    rendered = [
        (c.secret_id.removeprefix(str(tmp_path)), c.name, c.level.value)
        for c in checks
        if c.name.startswith("render.")
    ]
    assert rendered == [
        ("/good.env", "render.directory", "ok"),
        ("/good.env", "render.secret", "ok"),
        ("/good.env", "render.template", "ok"),
        ("/not-a-directory/app.env", "render.directory", "FAIL"),
        ("/not-a-directory/app.env", "render.secret", "ok"),
        ("/not-a-directory/app.env", "render.template", "FAIL"),
        ("/absent.json", "render.directory", "ok"),
        ("/absent.json", "render.secret", "FAIL"),
    ]
    assert not (tmp_path / "good.env").exists(), "the doctor writes no file"
    assert PASSWORD not in json.dumps([c.as_dict() for c in checks])


class _FaultyStore(AwsSecretStore):
    """A real store with a fault in rotd's own code for one secret: its first reads raise
    what no code path expects."""

    def __init__(self, connection: AwsConnection, faulty: str, times: int) -> None:
        super().__init__(connection)
        self.faulty, self.times = faulty, times

    async def get_value(
        self, secret_id: str, *, version_id: str | None = None, stage: str | None = None
    ) -> Any:
        if secret_id == self.faulty and self.times > 0:
            self.times -= 1
            raise RuntimeError("injected fault")
        return await super().get_value(secret_id, version_id=version_id, stage=stage)


async def test_a_fault_in_one_entry_is_caught_and_its_refresh_goes_on(
    secrets: Secrets, moto: MotoServer, tmp_path: Path, events: list[Event]
) -> None:
    faulty = await secrets.create("faulty", {**LOGIN, "password": PASSWORD})
    healthy = await secrets.create("healthy", {**LOGIN, "password": "Healthy-pass-1"})
    often = timedelta(milliseconds=50)
    first = entry(faulty, tmp_path / "faulty.json", refresh=often)
    second = entry(healthy, tmp_path / "healthy.json", refresh=often)
    connection = AwsConnection(region=moto.region, endpoint_url=moto.endpoint_url)
    faults: list[tuple[str, str]] = []
    async with _FaultyStore(connection, faulty, times=3) as store:
        renderer = Renderer(store, [first, second])
        renderer.on_fault = lambda path, stage: faults.append((path, stage))
        renderer.start(render_first=True)
        try:
            await until(lambda: (tmp_path / "faulty.json").exists(), "the faulty entry's file")
        finally:
            await renderer.close()
    assert json.loads((tmp_path / "healthy.json").read_text())["password"] == "Healthy-pass-1"
    assert faults == [(first.path, "render")] * 3
    caught = named(events, "unexpected_error.caught")
    assert len(caught) == 3
    assert all(e["stage"] == "render" for e in caught)
    assert [e["stage"] for e in named(events, "render.failed")] == ["internal"] * 3


async def test_a_temporary_file_left_by_a_killed_writer_is_removed(
    secrets: Secrets, store: AwsSecretStore, tmp_path: Path
) -> None:
    name = await secrets.create("leftover", {**LOGIN, "password": PASSWORD})
    path = tmp_path / "app.json"
    old = tmp_path / ".app.json.abc123.tmp"
    recent = tmp_path / ".app.json.def456.tmp"
    for leftover in (old, recent):
        leftover.write_text("half a secr")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert (await Renderer(store, [entry(name, path)]).render_all())[0].ok
    assert sorted(p.name for p in tmp_path.iterdir()) == [recent.name, path.name]
