"""New passwords, and the verifiers that let a server store them without seeing them.

Generation follows Secrets Manager's ``GetRandomPassword`` rules (length, excluded characters
and classes, one of each included class) but runs locally with :mod:`secrets`, which saves a
Secrets Manager call per rotation. The verifiers are what PostgreSQL (SCRAM-SHA-256, MD5) and
MySQL/MariaDB (``mysql_native_password``) store, computed here so that the plain password never
reaches a server's statement log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
import stringprep
import unicodedata
from dataclasses import dataclass

LOWERCASE = string.ascii_lowercase
UPPERCASE = string.ascii_uppercase
DIGITS = string.digits
# Secrets Manager's punctuation set.
PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"


@dataclass(frozen=True)
class PasswordPolicy:
    length: int = 32
    exclude_characters: str = "/@\"'\\"
    exclude_punctuation: bool = False
    exclude_numbers: bool = False
    exclude_uppercase: bool = False
    exclude_lowercase: bool = False
    require_each_included_type: bool = True

    def classes(self) -> list[str]:
        """The character classes in use, each without the excluded characters."""
        chosen = []
        for chars, excluded in (
            (LOWERCASE, self.exclude_lowercase),
            (UPPERCASE, self.exclude_uppercase),
            (DIGITS, self.exclude_numbers),
            (PUNCTUATION, self.exclude_punctuation),
        ):
            if excluded:
                continue
            kept = "".join(c for c in chars if c not in self.exclude_characters)
            if kept:
                chosen.append(kept)
        return chosen

    def problem(self) -> str | None:
        """Why this policy cannot produce a password, or None."""
        classes = self.classes()
        if not classes:
            return "the exclusions leave no character to build a password from"
        if self.require_each_included_type and self.length < len(classes):
            return (
                f"length {self.length} is shorter than the {len(classes)} character types "
                "that require_each_included_type asks for"
            )
        return None


def shaped_like(password: str) -> PasswordPolicy:
    """The policy of passwords as long as ``password`` and drawn from the character classes
    (and the punctuation) it uses: what a server that took ``password`` takes as well."""
    used = set(password)
    return PasswordPolicy(
        length=len(password),
        exclude_characters="".join(c for c in PUNCTUATION if c not in used),
        exclude_punctuation=not used & set(PUNCTUATION),
        exclude_numbers=not used & set(DIGITS),
        exclude_uppercase=not used & set(UPPERCASE),
        exclude_lowercase=not used & set(LOWERCASE),
    )


def generate(policy: PasswordPolicy) -> str:
    """A new random password that satisfies ``policy`` (which must have no problem)."""
    classes = policy.classes()
    alphabet = "".join(classes)
    while True:
        chars = [secrets.choice(alphabet) for _ in range(policy.length)]
        if not policy.require_each_included_type or all(
            any(c in cls for c in chars) for cls in classes
        ):
            return "".join(chars)


SCRAM_ITERATIONS = 4096


def saslprep(password: str) -> bytes:
    """The bytes PostgreSQL and its clients hash for ``password`` (RFC 4013 SASLprep).

    As PostgreSQL does, a password that SASLprep rejects (prohibited or badly mixed
    bidirectional characters) is used as its raw UTF-8 bytes instead.
    """
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c)
    )
    normalized = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    if any(check(c) for c in normalized for check in prohibited):
        return password.encode("utf-8")
    rand_al = [stringprep.in_table_d1(c) for c in normalized]
    if any(rand_al) and (
        any(stringprep.in_table_d2(c) for c in normalized) or not (rand_al[0] and rand_al[-1])
    ):
        return password.encode("utf-8")
    return normalized.encode("utf-8")


def scram_sha256_verifier(password: str, *, iterations: int = SCRAM_ITERATIONS) -> str:
    """PostgreSQL's stored form of ``password`` for SCRAM-SHA-256 (RFC 5802/7677)."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def postgres_md5_verifier(username: str, password: str) -> str:
    """PostgreSQL's legacy MD5 stored form, for servers with ``password_encryption = md5``."""
    digest = hashlib.md5((password + username).encode("utf-8"), usedforsecurity=False)
    return "md5" + digest.hexdigest()


_CRYPT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# The order in which SHA-256-crypt spells its digest's bytes, three at a time.
_CRYPT_ORDER = (
    (0, 10, 20), (21, 1, 11), (12, 22, 2), (3, 13, 23), (24, 4, 14),
    (15, 25, 5), (6, 16, 26), (27, 7, 17), (18, 28, 8), (9, 19, 29), (None, 31, 30),
)  # fmt: skip


def sha256_crypt_digest(password: bytes, salt: bytes, rounds: int) -> str:
    """The digest part of Drepper's SHA-256-crypt, as MySQL's ``caching_sha2_password`` and
    ``sha256_password`` store it (a 20-byte salt, which the glibc form would cut to 16)."""
    sha = hashlib.sha256
    alternate = sha(password + salt + password).digest()
    start = sha(password + salt)
    n = len(password)
    while n > 32:
        start.update(alternate)
        n -= 32
    start.update(alternate[:n])
    n = len(password)
    while n:
        start.update(alternate if n & 1 else password)
        n >>= 1
    digest = start.digest()
    p = (sha(password * len(password)).digest() * (len(password) // 32 + 1))[: len(password)]
    s = (sha(salt * (16 + digest[0])).digest() * (len(salt) // 32 + 1))[: len(salt)]
    for i in range(rounds):
        step = sha(p if i & 1 else digest)
        if i % 3:
            step.update(s)
        if i % 7:
            step.update(p)
        step.update(digest if i & 1 else p)
        digest = step.digest()
    chars = []
    for first, second, third in _CRYPT_ORDER:
        word = (digest[first] << 16 if first is not None else 0) | digest[second] << 8
        word |= digest[third]
        for _ in range(4 if first is not None else 3):
            chars.append(_CRYPT_ALPHABET[word & 0x3F])
            word >>= 6
    return "".join(chars)


def mysql_holds_password(stored: bytes, password: str) -> bool | None:
    """Whether a MySQL-family ``authentication_string`` is ``password``'s; None when its form
    is not one rotd can check (ed25519, parsec, plugins that keep no hash).

    Forms: ``*`` and 40 hex digits (``mysql_native_password``); ``$A$`` and the rounds in
    thousands as 3 hex digits, ``$``, a 20-byte salt and a 43-character digest
    (``caching_sha2_password``); ``$5$``, the salt, ``$`` and the digest (``sha256_password``).
    """
    secret = password.encode("utf-8")
    if len(stored) == 41 and stored[:1] == b"*":
        return hmac.compare_digest(stored.decode("ascii", "replace"), mysql_native_hash(password))
    if len(stored) == 70 and stored[:3] == b"$A$" and stored[6:7] == b"$":
        try:
            rounds = int(stored[3:6], 16) * 1000
        except ValueError:
            return None
        digest = sha256_crypt_digest(secret, stored[7:27], rounds)
        return hmac.compare_digest(stored[27:], digest.encode("ascii"))
    if stored[:3] == b"$5$" and len(stored) > 47 and stored[-44:-43] == b"$":
        digest = sha256_crypt_digest(secret, stored[3:-44], 5000)
        return hmac.compare_digest(stored[-43:], digest.encode("ascii"))
    return None


def mysql_native_hash(password: str) -> str:
    """The ``mysql_native_password`` hash: ``*`` and SHA1(SHA1(password)) in upper-case hex."""
    inner = hashlib.sha1(password.encode("utf-8"), usedforsecurity=False).digest()
    return "*" + hashlib.sha1(inner, usedforsecurity=False).hexdigest().upper()
