"""``rotd validate`` on inventories with ``engine: exec`` databases, as a real process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.fixtures.process import RotdProcess, run

INVENTORY = """\
databases:
  - name: broker
    engine: exec
    exec:
      set_password: [/usr/local/lib/rotd/rabbitmq, set]
      test_login: [/usr/local/lib/rotd/rabbitmq, test]
%s
    secrets:
      - id: prod/broker/app
        strategy: alternating_users
"""


def test_validate_checks_the_exec_block_offline(
    tmp_path: Path, rotd_process: Callable[..., RotdProcess]
) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text(INVENTORY % "      mirror_user: [/usr/local/lib/rotd/rabbitmq, mirror]")
    code, out, err = run(rotd_process, "validate", "-c", str(path))
    assert code == 0, err
    assert "valid: 1 database(s), 1 secret(s)" in out

    path.write_text(INVENTORY % "      timeout: never")
    code, _, err = run(rotd_process, "validate", "-c", str(path))
    assert code == 78, err
    assert f"{path}:7:16: databases.0.exec.timeout: duration 'never' is not valid" in err
    assert "Traceback" not in err

    path.write_text(INVENTORY % "")
    code, _, err = run(rotd_process, "validate", "-c", str(path))
    assert code == 78, err
    assert (
        f"{path}:9:13: secret 'prod/broker/app': engine 'exec' lacks the capability "
        "mirror_user, which strategy alternating_users needs (use single_user)" in err
    )
