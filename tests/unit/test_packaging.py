"""Static checks of the systemd unit and the container image: systemd/, Dockerfile."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rotd.inventory import DaemonModel
from rotd.schedule import parse_duration

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "rotd.service"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
INVENTORY = "/etc/rotd/inventory.yaml"

Unit = dict[str, list[tuple[str, str]]]


def parse_unit(text: str) -> Unit:
    """Sections to their (key, value) pairs in order; keys may repeat, as systemd allows."""
    sections: Unit = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"line {number}: bad section header {line!r}"
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"line {number}: assignment outside of a section"
        key, sep, value = line.partition("=")
        assert sep, f"line {number}: no '=' in {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: Unit, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def value(unit: Unit, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert found, f"[{section}] has no {key}="
    return found[-1]


def timespan_s(text: str) -> float:
    """A systemd time span such as ``45``, ``45s``, ``1min 30s`` or ``2m``, in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "ms": 0.001}
    parts = re.findall(r"(\d+)\s*([a-z]*)", text)
    assert parts, f"not a time span: {text!r}"
    return sum(int(number) * units[unit] for number, unit in parts)


@pytest.fixture(scope="module")
def unit() -> Unit:
    return parse_unit(UNIT.read_text())


def test_the_unit_has_its_three_sections(unit: Unit) -> None:
    assert set(unit) == {"Unit", "Service", "Install"}
    assert value(unit, "Install", "WantedBy") == "multi-user.target"
    assert "network-online.target" in value(unit, "Unit", "After").split()
    assert "network-online.target" in value(unit, "Unit", "Wants").split()


def test_the_lifecycle_matches_the_daemon(unit: Unit) -> None:
    assert value(unit, "Service", "Type") == "notify"
    assert value(unit, "Service", "NotifyAccess") == "main"
    assert value(unit, "Service", "ExecStart").endswith(f" run -c {INVENTORY}")
    assert value(unit, "Service", "Restart") == "on-failure"
    assert "78" in value(unit, "Service", "RestartPreventExitStatus").split()
    assert value(unit, "Service", "KillMode") == "mixed"
    assert timespan_s(value(unit, "Service", "WatchdogSec")) > 0


def test_systemd_waits_longer_than_the_shutdown_grace(unit: Unit) -> None:
    grace_s = parse_duration(DaemonModel.model_fields["shutdown_grace"].default).total_seconds()
    assert timespan_s(value(unit, "Service", "TimeoutStopSec")) > grace_s


def test_a_reload_validates_before_it_signals(unit: Unit) -> None:
    reload = values(unit, "Service", "ExecReload")
    validate = [i for i, command in enumerate(reload) if f" validate -c {INVENTORY}" in command]
    signal = [i for i, command in enumerate(reload) if re.search(r"kill -HUP \$MAINPID$", command)]
    assert validate
    assert signal
    assert max(validate) < min(signal)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("SystemCallArchitectures", "native"),
        ("UMask", "0077"),
    ],
)
def test_the_service_is_hardened(unit: Unit, key: str, expected: str) -> None:
    assert value(unit, "Service", key) == expected


def test_the_service_has_no_capabilities(unit: Unit) -> None:
    assert values(unit, "Service", "CapabilityBoundingSet") == [""]
    assert values(unit, "Service", "AmbientCapabilities") in ([], [""])


def test_the_service_uses_only_ip_and_unix_sockets(unit: Unit) -> None:
    families = value(unit, "Service", "RestrictAddressFamilies").split()
    assert sorted(families) == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert "@system-service" in values(unit, "Service", "SystemCallFilter")


def test_the_service_runs_as_its_own_user_and_reads_its_inventory(unit: Unit) -> None:
    dynamic = values(unit, "Service", "DynamicUser") == ["yes"]
    assert dynamic or value(unit, "Service", "User") not in ("", "root", "0")
    read_only = value(unit, "Service", "ReadOnlyPaths").split()
    assert any(path.lstrip("-") == "/etc/rotd" for path in read_only)


def copy_with_existing_commands(tmp_path: Path) -> Path:
    """The unit, with every Exec command that is not installed here replaced by ``true``."""
    true = shutil.which("true") or "/bin/true"
    lines = []
    for line in UNIT.read_text().splitlines():
        key, sep, command = line.partition("=")
        if sep and key.startswith("Exec") and command:
            program, _, arguments = command.partition(" ")
            if not os.access(program, os.X_OK):
                line = f"{key}={true} {arguments}"
        lines.append(line)
    copy = tmp_path / "rotd.service"
    copy.write_text("\n".join(lines) + "\n")
    return copy


SYNTAX_PROBLEM = re.compile(
    r"Unknown (key|lvalue|section)|Failed to parse|Invalid section|Missing '='"
    r"|outside of section|fatal error|bad-setting",
    re.IGNORECASE,
)


INSTALL_SYSTEMD_ANALYZE = (
    "systemd-analyze checks the unit; it comes with Debian's and Ubuntu's systemd package: "
    "apt-get install --no-install-recommends systemd (.ci/run installs it when it is missing)"
)


def systemd_analyze() -> str:
    """The path of systemd-analyze; fails (never skips) without it, saying how to install it."""
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail(f"systemd-analyze is not installed. {INSTALL_SYSTEMD_ANALYZE}")
    return path


def test_systemd_analyze_verify_finds_no_syntax_problem(tmp_path: Path) -> None:
    systemd_analyze()
    copy = copy_with_existing_commands(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    output = result.stdout + result.stderr
    problems = [line for line in output.splitlines() if SYNTAX_PROBLEM.search(line)]
    assert problems == [], output


def test_the_exposure_level_stays_low(tmp_path: Path) -> None:
    help_text = subprocess.run(
        [systemd_analyze(), "--help"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    scores_offline = all(option in help_text for option in ("--offline", "--threshold"))
    assert scores_offline, (
        "this systemd-analyze cannot score a unit file offline (security --offline and "
        f"--threshold came with systemd 250). {INSTALL_SYSTEMD_ANALYZE}, from a release "
        "that ships systemd 250 or later (Debian 12, for one)"
    )
    copy = copy_with_existing_commands(tmp_path)
    # --threshold is on a 0-100 scale: 20 is the "2.0" systemd prints. This unit scores 1.4.
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=20", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-500:] + result.stderr


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        line = pending + stripped
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        name, _, arguments = line.partition(" ")
        instructions.append((name.upper(), arguments.strip()))
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def only(stage: list[tuple[str, str]], instruction: str) -> str:
    found = [arguments for name, arguments in stage if name == instruction]
    assert len(found) == 1, f"expected one {instruction}, found {found}"
    return found[0]


def test_the_image_is_multi_stage_and_copies_the_venv() -> None:
    instructions = dockerfile_instructions()
    assert sum(1 for name, _ in instructions if name == "FROM") == 2
    copies = [arguments for name, arguments in final_stage() if name == "COPY"]
    assert any(arguments.startswith("--from=builder ") for arguments in copies)


def test_the_image_runs_as_a_non_root_user() -> None:
    user = only(final_stage(), "USER").split(":")[0]
    assert user not in ("", "0", "root")


def test_rotd_runs_under_an_init_in_exec_form_and_reads_the_mounted_inventory() -> None:
    stage = final_stage()
    entrypoint = json.loads(only(stage, "ENTRYPOINT"))
    assert isinstance(entrypoint, list)
    # tini reaps orphans as PID 1 and signals rotd alone (no -g: hooks have groups of their
    # own); tests/e2e/test_container.py runs this very entrypoint in a PID namespace.
    assert entrypoint[0] == "/usr/bin/tini"
    assert entrypoint[entrypoint.index("--") + 1 :] == ["/opt/rotd/bin/rotd"]
    assert "-g" not in entrypoint
    assert any("install" in arguments and " tini" in arguments for _, arguments in stage)
    assert json.loads(only(stage, "CMD")) == ["run", "-c", INVENTORY]
    assert only(stage, "STOPSIGNAL") == "SIGTERM"


def test_the_health_check_asks_healthz() -> None:
    healthcheck = only(final_stage(), "HEALTHCHECK")
    _, _, command = healthcheck.partition("CMD ")
    assert "/healthz" in " ".join(json.loads(command))


def test_the_build_context_keeps_what_the_build_copies() -> None:
    ignored = {
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv"} <= ignored
    for name, arguments in dockerfile_instructions():
        if name == "COPY" and not arguments.startswith("--from="):
            *sources, _destination = arguments.split()
            for source in sources:
                assert source not in ignored
                assert (ROOT / source).exists(), source
