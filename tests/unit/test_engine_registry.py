"""The engine registry: names from entry points, engines loaded once when asked for, and every
way a third party's entry point can be wrong reported as an EngineError for that engine only."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

from rotd.engines import API_VERSION, Capabilities, EngineInfo, TlsMode
from rotd.engines.registry import GROUP, EngineRegistry, installed
from rotd.errors import Category, EngineError

MADE: list[str] = []


class Minimal:
    info = EngineInfo(Capabilities(), default_port=1234)

    def __init__(self) -> None:
        MADE.append("minimal")

    def connect(self, login: object, *, timeout_s: float) -> object:
        raise NotImplementedError


class FromTheFuture(Minimal):
    info = EngineInfo(Capabilities(), default_port=1, api_version=API_VERSION + 1)


def not_an_engine() -> object:
    return object()


def raises() -> object:
    raise RuntimeError("no licence file")


def point(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=f"{__name__}:{value}", group=GROUP)


def registry() -> EngineRegistry:
    return EngineRegistry(
        [
            point("minimal", "Minimal"),
            point("future", "FromTheFuture"),
            point("raises", "raises"),
            point("not-an-engine", "not_an_engine"),
            point("absent", "NoSuchThing"),
        ]
    )


def test_an_engine_is_made_once_when_first_asked_for() -> None:
    engines = registry()
    MADE.clear()
    assert engines.names() == ["absent", "future", "minimal", "not-an-engine", "raises"]
    assert MADE == []
    assert engines["minimal"] is engines["minimal"]
    assert MADE == ["minimal"]
    assert engines["minimal"].info.default_port == 1234


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("future", f"was written for engine API version {API_VERSION + 1}"),
        (
            "raises",
            "cannot be loaded from entry point 'tests.unit.test_engine_registry:raises' "
            "of an unknown package: RuntimeError: no licence file",
        ),
        ("not-an-engine", "does not make an engine (an object with info: EngineInfo"),
        ("absent", "AttributeError"),
        (
            "oracle",
            "no such engine is installed; installed: absent, future, minimal, "
            "not-an-engine, raises",
        ),
    ],
)
def test_an_unusable_engine_is_a_permanent_error_naming_it(name: str, reason: str) -> None:
    engines = registry()
    with pytest.raises(EngineError) as raised:
        engines[name]
    assert raised.value.engine == name
    assert reason in raised.value.reason
    assert raised.value.category is Category.UNSUPPORTED
    assert not raised.value.transient
    assert engines["minimal"].info.default_port == 1234  # the others are still usable


def test_problems_lists_each_broken_engine_once() -> None:
    assert sorted(e.engine for e in registry().problems()) == [
        "absent",
        "future",
        "not-an-engine",
        "raises",
    ]


def test_the_built_in_engines_are_registered_under_aws_names() -> None:
    engines = installed()
    for name in ("postgres", "aurora-postgresql", "mysql", "aurora-mysql", "mariadb"):
        assert name in engines.names()
        capabilities = engines[name].info.capabilities
        assert capabilities.mirror_user
        assert capabilities.rotation_lock
    assert engines["aurora-postgresql"].info.default_port == 5432
    assert engines["mariadb"].info.default_port == 3306
    assert engines["postgres"].info.default_dbname == "postgres"


def test_capabilities_name_what_a_rotation_lacks() -> None:
    bare = Capabilities(single_user=False)
    assert bare.lacking(alternating=True, tls=TlsMode.PREFER) == (
        "mirror_user, which strategy alternating_users needs (use single_user)"
    )
    assert "single_user" in (bare.lacking(alternating=False, tls=TlsMode.PREFER) or "")
    single = Capabilities()
    assert single.lacking(alternating=False, tls=TlsMode.PREFER) is None
    assert "tls, which tls: verify-full needs" in (
        single.lacking(alternating=False, tls=TlsMode.VERIFY_FULL) or ""
    )


def test_looking_engines_up_imports_no_driver() -> None:
    # Validating an inventory, or reading a secret's default port, must stay fast.
    script = (
        "import sys\n"
        "from rotd.credentials import Credentials\n"
        "from rotd.inventory import loads\n"
        "loads('databases: [{name: a, engine: mariadb, secrets: [{id: x}]}]')\n"
        'c = Credentials.parse(\'{"engine": "aurora-postgresql", "host": "h", '
        '"username": "u", "password": "p"}\')\n'
        "assert c.port == 5432 and c.dbname == 'postgres', c\n"
        "print(sorted(m for m in ('asyncpg', 'aiomysql', 'pymysql') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_no_engine_at_all_says_to_reinstall_rotd() -> None:
    # A venv installed before rotd declared its entry points has none, not even postgres.
    with pytest.raises(EngineError, match=r"installed: none \(reinstall rotd: make install\)"):
        EngineRegistry([])["postgres"]
