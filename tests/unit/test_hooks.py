"""The parts of hooks that need no process and no server: signature, environment, metric."""

from __future__ import annotations

import pytest

from rotd.hooks import STRIPPED_ENV, exec_env, sign
from rotd.observability import Metrics


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    # printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac k3y
    expected = "fd5a70e965043f7df6309c2c3b5ff5a8ffa99b1f5175e9a311459e73c4634d4a"
    assert sign(b"k3y", "1700000000", b'{"a":1}') == f"sha256={expected}"


def test_exec_hooks_get_the_environment_without_aws_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in STRIPPED_ENV:
        monkeypatch.setenv(name, "credential")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("ROTD_SECRET_ID", "stale")
    env = exec_env({"ROTD_SECRET_ID": "prod/app", "ROTD_DATABASE": "orders"})
    assert not set(STRIPPED_ENV) & set(env)
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} <= set(STRIPPED_ENV)
    assert env["AWS_REGION"] == "eu-west-1"
    assert env["ROTD_SECRET_ID"] == "prod/app"
    assert env["ROTD_DATABASE"] == "orders"


def test_hook_runs_are_counted_by_database_kind_and_result() -> None:
    metrics = Metrics()
    metrics.hook_finished("orders", "webhook", "succeeded")
    metrics.hook_finished("orders", "webhook", "succeeded")
    metrics.hook_finished("orders", "exec", "failed")
    text = metrics.render().decode()
    assert 'rotd_hook_runs_total{database="orders",kind="webhook",result="succeeded"} 2.0' in text
    assert 'rotd_hook_runs_total{database="orders",kind="exec",result="failed"} 1.0' in text
