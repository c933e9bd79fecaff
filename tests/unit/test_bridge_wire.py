"""What the bridge function and rotd say to each other (rotd.bridge.wire), the function's
settings and its archive, without any server."""

from __future__ import annotations

import io
import json
import re
import zipfile
from typing import Any

import pytest

from rotd.bridge import package, wire
from rotd.bridge.lambda_function import Settings, SettingsError

MESSAGE = wire.Message(
    secret_id="arn:aws:secretsmanager:us-east-1:123456789012:secret:app-AbCdEf",
    token="5d1f8a4e-0f0b-4a3a-9d4e-2f1c3b4a5d6e",
    step="setSecret",
    request="0123456789abcdef0123456789abcdef",
    function_arn="arn:aws:lambda:us-east-1:123456789012:function:rotd-bridge",
)


def body(**changes: Any) -> str:
    data = json.loads(wire.encode_message(MESSAGE))
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data)


def test_a_message_reads_back_as_it_was_sent() -> None:
    encoded = wire.encode_message(MESSAGE)
    assert json.loads(encoded) == {
        "format": 1,
        "SecretId": MESSAGE.secret_id,
        "ClientRequestToken": MESSAGE.token,
        "Step": "setSecret",
        "Request": MESSAGE.request,
        "Function": MESSAGE.function_arn,
    }
    assert wire.decode_message(encoded) == MESSAGE


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (body(format=2), "format 2, expected 1"),
        (body(format=None), "format None, expected 1"),
        (body(SecretId=None), "SecretId missing or not a string"),
        (body(ClientRequestToken=7), "ClientRequestToken missing or not a string"),
        (body(Step=""), "Step missing or not a string"),
        (body(Function="x" * 2049), "Function missing or not a string"),
        (body(Step="rotateSecret"), "unknown Step 'rotateSecret'"),
        (body(Request="not an id!"), "Request is not an id"),
        (body(Request="a" * 65), "Request is not an id"),
    ],
)
def test_a_malformed_message_is_refused_with_its_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(reason)}$"):
        wire.decode_message(text)


def test_tag_safe_keeps_what_a_tag_value_may_hold() -> None:
    assert wire.tag_safe("host db-1.example:5432 user=app_x+y@z/w") == (
        "host db-1.example:5432 user=app_x+y@z/w"
    )
    assert wire.tag_safe('permission "denied"; (role)\n\tagain!') == (
        "permission denied role again"
    )


def test_a_failure_is_written_in_one_tag_value_and_read_back() -> None:
    failure = wire.Failure(MESSAGE.request, "setSecret", "database", "cannot log in (28P01)")
    value = wire.encode_failure(failure)
    assert value == f"{MESSAGE.request} setSecret database cannot log in 28P01"
    assert wire.decode_failure(value) == wire.Failure(
        MESSAGE.request, "setSecret", "database", "cannot log in 28P01"
    )


def test_a_failure_is_cut_to_the_tags_limit_of_256_characters() -> None:
    failure = wire.Failure(MESSAGE.request, "testSecret", "", "x" * 500)
    value = wire.encode_failure(failure)
    assert len(value) == 256
    decoded = wire.decode_failure(value)
    assert decoded is not None
    assert decoded.category == "-"
    assert decoded.reason == "x" * (256 - len(f"{MESSAGE.request} testSecret - "))


@pytest.mark.parametrize(
    "value", ["", "someone else's tag", f"{MESSAGE.request} rotate x", "not/an/id setSecret x"]
)
def test_a_tag_value_rotd_did_not_write_is_no_failure(value: str) -> None:
    assert wire.decode_failure(value) is None


def test_the_function_settings_have_defaults_and_say_what_is_wrong() -> None:
    assert Settings.from_environ({"ROTD_BRIDGE_QUEUE_URL": "https://q"}) == Settings(
        queue_url="https://q", poll_s=2.0, margin_s=5.0, step_timeout_s=None
    )
    given = {
        "ROTD_BRIDGE_QUEUE_URL": "https://q",
        "ROTD_BRIDGE_POLL_S": "0.5",
        "ROTD_BRIDGE_MARGIN_S": "0",
        "ROTD_BRIDGE_STEP_TIMEOUT_S": "120",
    }
    assert Settings.from_environ(given) == Settings("https://q", 0.5, 0.0, 120.0)

    with pytest.raises(SettingsError, match=r"^ROTD_BRIDGE_QUEUE_URL is not set"):
        Settings.from_environ({})
    for name, text in [
        ("ROTD_BRIDGE_POLL_S", "soon"),
        ("ROTD_BRIDGE_POLL_S", "0"),
        ("ROTD_BRIDGE_MARGIN_S", "-1"),
        ("ROTD_BRIDGE_STEP_TIMEOUT_S", "nan"),
    ]:
        with pytest.raises(SettingsError, match=f"^{name} is "):
            Settings.from_environ({"ROTD_BRIDGE_QUEUE_URL": "https://q", name: text})


def test_the_archive_holds_the_function_and_a_package_that_imports_nothing() -> None:
    data = package.archive_bytes()
    assert data == package.archive_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        entries = archive.infolist()
        assert [e.filename for e in entries] == [
            "rotd/__init__.py",
            "rotd/bridge/__init__.py",
            "rotd/bridge/lambda_function.py",
            "rotd/bridge/wire.py",
        ]
        assert {e.date_time for e in entries} == {(1980, 1, 1, 0, 0, 0)}
        assert {e.external_attr >> 16 for e in entries} == {0o100644}
        init = archive.read("rotd/__init__.py").decode()
    assert "import" not in init
    assert compile(init, "rotd/__init__.py", "exec").co_names == ("__doc__",)
    assert len(package.code_sha256()) == 44  # base64 of 32 bytes, as Lambda shows it
