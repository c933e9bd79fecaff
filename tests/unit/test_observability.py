"""The redactor masks every registered secret in any text, exceptions included."""

from __future__ import annotations

from rotd.observability import REDACTED, Redactor


def test_registered_values_are_masked_wherever_they_appear() -> None:
    redactor = Redactor()
    redactor.add("s3cret-value", "another-one-xyz", None, "abc")
    text = "login s3cret-value failed; also another-one-xyz and abc stay"
    assert redactor.scrub(text) == f"login {REDACTED} failed; also {REDACTED} and abc stay"


def test_nested_values_and_exceptions_are_scrubbed() -> None:
    redactor = Redactor()
    redactor.add("hunter2-hunter2")
    event = {"a": ["x hunter2-hunter2"], "b": {"c": ValueError("bad hunter2-hunter2")}}
    assert redactor.scrub_value(event) == {
        "a": [f"x {REDACTED}"],
        "b": {"c": f"ValueError: bad {REDACTED}"},
    }


def test_the_oldest_values_are_forgotten_beyond_capacity() -> None:
    redactor = Redactor(capacity=2)
    redactor.add("first-value", "second-value", "third-value")
    assert redactor.scrub("first-value") == "first-value"
    assert redactor.scrub("third-value") == REDACTED


def test_a_longer_secret_containing_a_shorter_one_is_masked_whole() -> None:
    redactor = Redactor()
    redactor.add("pass-word", "xxpass-wordyy")
    assert redactor.scrub("[xxpass-wordyy]") == f"[{REDACTED}]"
