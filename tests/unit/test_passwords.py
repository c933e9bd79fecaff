"""Password generation rules and the verifiers servers store."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from rotd.passwords import (
    DIGITS,
    LOWERCASE,
    PUNCTUATION,
    UPPERCASE,
    PasswordPolicy,
    generate,
    mysql_native_hash,
    postgres_md5_verifier,
    saslprep,
    scram_sha256_verifier,
)


def test_generated_passwords_follow_the_policy() -> None:
    policy = PasswordPolicy(length=24, exclude_characters="abc/@")
    for _ in range(200):
        password = generate(policy)
        assert len(password) == 24
        assert not set(password) & set("abc/@")
        for chars in (LOWERCASE, UPPERCASE, DIGITS, PUNCTUATION):
            assert set(password) & set(chars), "each included type must appear"


def test_excluded_classes_never_appear() -> None:
    policy = PasswordPolicy(length=40, exclude_punctuation=True, exclude_numbers=True)
    password = generate(policy)
    assert password.isalpha()
    assert password.isascii()


@pytest.mark.parametrize(
    ("policy", "problem"),
    [
        (
            PasswordPolicy(
                exclude_lowercase=True,
                exclude_uppercase=True,
                exclude_numbers=True,
                exclude_punctuation=True,
            ),
            "no character",
        ),
        (PasswordPolicy(length=3), "shorter than the 4 character types"),
    ],
)
def test_impossible_policies_are_explained(policy: PasswordPolicy, problem: str) -> None:
    reason = policy.problem()
    assert reason is not None
    assert problem in reason


def test_mysql_native_hash_matches_the_server_formula() -> None:
    assert mysql_native_hash("password") == "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"


def test_postgres_md5_verifier() -> None:
    expected = "md5" + hashlib.md5(b"secretalice").hexdigest()
    assert postgres_md5_verifier("alice", "secret") == expected


def test_scram_verifier_proves_the_password() -> None:
    verifier = scram_sha256_verifier("pencil")
    method, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    iterations, salt = iterations_salt.split(":")
    stored_key, server_key = keys.split(":")
    assert method == "SCRAM-SHA-256"
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", base64.b64decode(salt), int(iterations))
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    assert base64.b64decode(stored_key) == hashlib.sha256(client_key).digest()
    assert base64.b64decode(server_key) == hmac.digest(salted, b"Server Key", "sha256")


@pytest.mark.parametrize(
    ("password", "prepared"),
    [
        ("plain-ascii", b"plain-ascii"),
        ("\ufb01le", b"file"),  # a ligature is normalized (NFKC)
        ("\uff21\uff22\uff23", b"ABC"),  # full-width letters too
        ("a\u3000b", b"a b"),  # a non-ASCII space becomes a space
        ("soft\u00adhyphen", b"softhyphen"),  # mapped to nothing
        ("bad\u0007bell", "bad\u0007bell".encode()),  # prohibited: raw bytes, as PostgreSQL
    ],
)
def test_saslprep(password: str, prepared: bytes) -> None:
    assert saslprep(password) == prepared
