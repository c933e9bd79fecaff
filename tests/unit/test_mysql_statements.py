"""What rotd says to each MySQL flavour, checked without a server: MySQL 5.7, 8.0, 8.4 and
MariaDB. MySQL 8 cannot run here; these pin the statements down from the manual, and the
MariaDB ones are also run for real in tests/integration/test_mysql_engine.py."""

from __future__ import annotations

import string

import pytest

from rotd.engines import Permission
from rotd.engines.mysql import (
    Flavour,
    _discard_sql,
    _grant_statements,
    _holds,
    _needed_to_grant,
    _option_clauses,
    _option_revokes,
    _parse_grants,
    _password_options_of,
    _placeholder,
    _policy_verdict,
    _retain_sql,
    _retain_verdict,
    _unmirrored_options,
)
from rotd.passwords import PUNCTUATION, PasswordPolicy, mysql_holds_password, mysql_native_hash

FLAVOURS = {
    "mysql-5.7": Flavour.parse("5.7.44-log"),
    "mysql-8.0": Flavour.parse("8.0.36"),
    "mysql-8.4": Flavour.parse("8.4.3"),
    "mariadb": Flavour.parse("10.11.6-MariaDB"),
}


def meets_validate_password_medium(password: str) -> bool:
    """MySQL's validate_password at MEDIUM, its default: 8 long, mixed case, digit, special."""
    return (
        len(password) >= 8
        and any(c in string.ascii_lowercase for c in password)
        and any(c in string.ascii_uppercase for c in password)
        and any(c in string.digits for c in password)
        and any(not c.isalnum() for c in password)
    )


def test_a_new_clones_placeholder_passes_the_policy_the_real_password_passes() -> None:
    real = "Kq7!vR2#pL9$wX4%"
    for _ in range(300):
        placeholder = _placeholder(real)
        assert meets_validate_password_medium(placeholder)
        assert len(placeholder) == len(real)
        assert placeholder != real
        assert set(placeholder) - set(string.ascii_letters + string.digits) <= set("!#$%")


def test_a_placeholder_keeps_to_the_classes_the_real_password_uses() -> None:
    for _ in range(100):
        placeholder = _placeholder("abcdefgh12345678")
        assert set(placeholder) <= set(string.ascii_lowercase + string.digits)
        assert not set(placeholder) & set(PUNCTUATION)


# -- grant options ---------------------------------------------------------------------------

MYSQL8_MIXED = [
    "GRANT SELECT ON *.* TO `app`@`%` WITH GRANT OPTION",
    "GRANT BACKUP_ADMIN ON *.* TO `app`@`%`",
    "GRANT AUDIT_ADMIN,XA_RECOVER_ADMIN ON *.* TO `app`@`%` WITH GRANT OPTION",
]


@pytest.mark.parametrize("name", ["mysql-8.0", "mysql-8.4"])
def test_mysql_8_dynamic_privileges_keep_their_own_grant_option(name: str) -> None:
    flavour = FLAVOURS[name]
    privileges = _parse_grants(MYSQL8_MIXED, "app", "%", dynamic=flavour.dynamic)
    assert privileges.on == {
        "*.*": {
            "SELECT",
            "GRANT OPTION",
            "BACKUP_ADMIN",
            "AUDIT_ADMIN WITH GRANT OPTION",
            "XA_RECOVER_ADMIN WITH GRANT OPTION",
        }
    }
    statements = _grant_statements(privileges.on["*.*"], "*.*", "'c'@'%'", dynamic=True)
    # BACKUP_ADMIN is given without the grant option that SELECT has on the same level.
    assert statements == [
        "GRANT SELECT ON *.* TO 'c'@'%' WITH GRANT OPTION",
        "GRANT BACKUP_ADMIN ON *.* TO 'c'@'%'",
        "GRANT AUDIT_ADMIN, XA_RECOVER_ADMIN ON *.* TO 'c'@'%' WITH GRANT OPTION",
    ]


@pytest.mark.parametrize("name", ["mysql-5.7", "mariadb"])
def test_other_flavours_have_one_grant_option_per_level(name: str) -> None:
    lines = ["GRANT SELECT, BINLOG ADMIN ON *.* TO `app`@`%` WITH GRANT OPTION"]
    privileges = _parse_grants(lines, "app", "%", dynamic=FLAVOURS[name].dynamic)
    assert privileges.on == {"*.*": {"SELECT", "BINLOG ADMIN", "GRANT OPTION"}}
    dynamic = FLAVOURS[name].dynamic
    assert _grant_statements(privileges.on["*.*"], "*.*", "'c'@'%'", dynamic=dynamic) == [
        "GRANT BINLOG ADMIN, SELECT ON *.* TO 'c'@'%' WITH GRANT OPTION"
    ]


def test_a_grant_option_the_original_lacks_is_taken_back_whole() -> None:
    have = {"BACKUP_ADMIN WITH GRANT OPTION", "AUDIT_ADMIN WITH GRANT OPTION"}
    want = {"BACKUP_ADMIN"}
    assert _option_revokes(have - want, want, "*.*", "'c'@'%'") == [
        "REVOKE AUDIT_ADMIN ON *.* FROM 'c'@'%'",
        "REVOKE BACKUP_ADMIN ON *.* FROM 'c'@'%'",
        "GRANT BACKUP_ADMIN ON *.* TO 'c'@'%'",
    ]


def test_the_grantor_needs_each_dynamic_privileges_own_grant_option() -> None:
    items = {"SELECT", "BACKUP_ADMIN", "GRANT OPTION"}
    assert _needed_to_grant(items, dynamic=True) == {
        "SELECT",
        "GRANT OPTION",
        "BACKUP_ADMIN WITH GRANT OPTION",
    }
    assert _needed_to_grant(items, dynamic=False) == {"SELECT", "BACKUP_ADMIN", "GRANT OPTION"}
    # Only dynamic privileges to pass on: the level's GRANT OPTION is not needed.
    assert _needed_to_grant({"SYSTEM_USER"}, dynamic=True) == {"SYSTEM_USER WITH GRANT OPTION"}
    master = _parse_grants(
        [
            "GRANT SELECT, CREATE USER ON *.* TO `admin`@`%` WITH GRANT OPTION",
            "GRANT BACKUP_ADMIN ON *.* TO `admin`@`%`",
        ],
        "admin",
        "%",
        dynamic=True,
    )
    assert _holds(master, "*.*", "SELECT")
    assert _holds(master, "*.*", "GRANT OPTION")
    assert not _holds(master, "*.*", "BACKUP_ADMIN WITH GRANT OPTION")


# -- knowing whether an account already holds a password ------------------------------------


@pytest.mark.parametrize(
    ("password", "salt_hex", "digest_hex"),
    [
        # Published MySQL 8 caching_sha2_password hashes (hashcat mode 7401's examples).
        ("hashcat", "F9CC98CE08892924F50A213B6BC571A2C11778C5",
         "625479393559393965414D45316477456B484F41316E64484742577A2E3162785353526B7554584647562F"),
        ("password", "06437A150142644D74187A6A2F0D7971094F2575",
         "48667A67485366745A304F6A487A73704250663465337A7530325157687A51364A384D737554424939702E"),
    ],
)  # fmt: skip
def test_a_caching_sha2_password_hash_is_recognised(
    password: str, salt_hex: str, digest_hex: str
) -> None:
    stored = b"$A$005$" + bytes.fromhex(salt_hex) + bytes.fromhex(digest_hex)
    assert mysql_holds_password(stored, password) is True
    assert mysql_holds_password(stored, password + "x") is False


def test_native_and_unknown_hashes() -> None:
    assert mysql_holds_password(mysql_native_hash("pw").encode(), "pw") is True
    assert mysql_holds_password(mysql_native_hash("pw").encode(), "other") is False
    # MariaDB's ed25519 stores a public key: rotd cannot tell, and says so.
    assert mysql_holds_password(b"ZIgUREUg5PVgQ6LskhXmO+eZLS0nC8be6HPjYWR4YJY", "pw") is None
    assert mysql_holds_password(b"", "pw") is None


# -- the server's password policy against the secret's password settings ---------------------

MYSQL_8_MEDIUM = {  # the validate_password component, names as SHOW VARIABLES spells them
    "validate_password.length": "8",
    "validate_password.policy": "MEDIUM",
    "validate_password.mixed_case_count": "1",
    "validate_password.number_count": "1",
    "validate_password.special_char_count": "1",
}
MYSQL_57_MEDIUM = {name.replace(".", "_"): value for name, value in MYSQL_8_MEDIUM.items()}
MARIADB_SIMPLE = {
    "simple_password_check_minimal_length": "12",
    "simple_password_check_letters_same_case": "1",
    "simple_password_check_digits": "1",
    "simple_password_check_other_characters": "1",
}


def verdict(settings: dict[str, str], policy: PasswordPolicy) -> Permission:
    # The engine reads SHOW VARIABLES and spells MySQL 8's dotted names with underscores.
    return _policy_verdict({k.replace(".", "_"): v for k, v in settings.items()}, policy)


@pytest.mark.parametrize("settings", [MYSQL_8_MEDIUM, MYSQL_57_MEDIUM, MARIADB_SIMPLE])
def test_the_default_password_settings_pass_every_flavours_default_policy(
    settings: dict[str, str],
) -> None:
    assert verdict(settings, PasswordPolicy()).granted


@pytest.mark.parametrize("settings", [MYSQL_8_MEDIUM, MYSQL_57_MEDIUM, MARIADB_SIMPLE])
def test_settings_without_punctuation_are_refused_with_the_fix(settings: dict[str, str]) -> None:
    found = verdict(settings, PasswordPolicy(exclude_punctuation=True))
    assert not found.granted
    assert "special characters" in found.reason
    assert found.fix is not None
    assert "inventory" in found.fix


def test_a_length_under_the_servers_minimum_is_refused() -> None:
    found = verdict(MARIADB_SIMPLE, PasswordPolicy(length=10))
    assert not found.granted
    assert "12" in found.reason


def test_a_low_policy_asks_only_for_length_and_no_policy_asks_nothing() -> None:
    low = {**MYSQL_8_MEDIUM, "validate_password.policy": "LOW"}
    assert verdict(low, PasswordPolicy(exclude_punctuation=True)).granted
    assert verdict({}, PasswordPolicy(length=4, exclude_punctuation=True)).granted


def test_more_than_one_of_a_type_is_granted_with_a_warning_of_what_happens() -> None:
    strict = {**MYSQL_8_MEDIUM, "validate_password.special_char_count": "3"}
    found = verdict(strict, PasswordPolicy())
    assert found.granted
    assert "special characters" in found.reason
    assert "next attempt" in found.reason


# -- account options a clone copies ------------------------------------------------------------

SHOW_CREATE_USER = {
    # MySQL 8 prints every option, defaults included; the hash is quoted and may hold anything.
    "mysql-8.0": "CREATE USER `app`@`%` IDENTIFIED WITH 'caching_sha2_password' AS "
    "'$A$005$x PASSWORD HISTORY 9' REQUIRE NONE PASSWORD EXPIRE INTERVAL 90 DAY ACCOUNT LOCK "
    "PASSWORD HISTORY 5 PASSWORD REUSE INTERVAL DEFAULT PASSWORD REQUIRE CURRENT OPTIONAL "
    'FAILED_LOGIN_ATTEMPTS 3 PASSWORD_LOCK_TIME UNBOUNDED ATTRIBUTE \'{"team": "a"}\'',
    "mysql-8.4": "CREATE USER `app`@`%` IDENTIFIED WITH 'caching_sha2_password' AS '$A$005$y' "
    "REQUIRE NONE PASSWORD EXPIRE INTERVAL 90 DAY ACCOUNT UNLOCK PASSWORD HISTORY 5 "
    "PASSWORD REUSE INTERVAL DEFAULT PASSWORD REQUIRE CURRENT OPTIONAL FAILED_LOGIN_ATTEMPTS 3 "
    "PASSWORD_LOCK_TIME UNBOUNDED COMMENT 'owned by team a'",
    # MySQL 5.7 has expiry only; MariaDB prints only what differs from the default.
    "mysql-5.7": "CREATE USER 'app'@'%' IDENTIFIED WITH 'mysql_native_password' AS '*ABC' "
    "REQUIRE NONE PASSWORD EXPIRE INTERVAL 90 DAY ACCOUNT UNLOCK",
    "mariadb": "CREATE USER `app`@`%` IDENTIFIED BY PASSWORD '*ABC' "
    "PASSWORD EXPIRE INTERVAL 90 DAY ACCOUNT LOCK",
}
MYSQL_8_OPTIONS = [
    "PASSWORD EXPIRE INTERVAL 90 DAY",
    "PASSWORD HISTORY 5",
    "PASSWORD REUSE INTERVAL DEFAULT",
    "PASSWORD REQUIRE CURRENT OPTIONAL",
    "FAILED_LOGIN_ATTEMPTS 3",
    "PASSWORD_LOCK_TIME UNBOUNDED",
]


@pytest.mark.parametrize(
    ("name", "options", "unmirrored"),
    [
        ("mysql-8.0", MYSQL_8_OPTIONS, ["ACCOUNT LOCK", "ATTRIBUTE"]),
        ("mysql-8.4", MYSQL_8_OPTIONS, ["COMMENT"]),
        ("mysql-5.7", ["PASSWORD EXPIRE INTERVAL 90 DAY"], []),
        ("mariadb", ["PASSWORD EXPIRE INTERVAL 90 DAY"], ["ACCOUNT LOCK"]),
    ],
)
def test_a_new_clone_gets_the_originals_password_options(
    name: str, options: list[str], unmirrored: list[str]
) -> None:
    found = _password_options_of(SHOW_CREATE_USER[name])
    assert list(found) == options
    assert _option_clauses(found, ()) == options
    assert _unmirrored_options(SHOW_CREATE_USER[name]) == unmirrored


def test_options_only_the_clone_has_go_back_to_the_default() -> None:
    clone = ("PASSWORD EXPIRE NEVER", "FAILED_LOGIN_ATTEMPTS 4", "PASSWORD_LOCK_TIME 2")
    original = ("PASSWORD EXPIRE NEVER",)
    assert _option_clauses(original, clone) == ["FAILED_LOGIN_ATTEMPTS 0", "PASSWORD_LOCK_TIME 0"]
    assert _option_clauses(clone, clone) == []
    # MySQL 8 prints defaults: nothing to put back when both show them.
    assert _option_clauses(("PASSWORD HISTORY DEFAULT",), ("PASSWORD HISTORY 3",)) == [
        "PASSWORD HISTORY DEFAULT"
    ]


# -- dual passwords (MySQL 8.0.14+: RETAIN CURRENT PASSWORD, DISCARD OLD PASSWORD) -------------

DUAL = {
    "mysql-5.7": (Flavour.parse("5.7.44-log"), False),
    "mysql-8.0.13": (Flavour.parse("8.0.13"), False),
    "mysql-8.0.14": (Flavour.parse("8.0.14"), True),
    "mysql-8.0": (FLAVOURS["mysql-8.0"], True),
    "mysql-8.4": (FLAVOURS["mysql-8.4"], True),
    "aurora-mysql-3": (Flavour.parse("8.0.mysql_aurora.3.05.2"), False),
    "mariadb": (FLAVOURS["mariadb"], False),
    "mariadb-11": (Flavour.parse("11.4.2-MariaDB"), False),
}


@pytest.mark.parametrize("name", sorted(DUAL))
def test_only_mysql_8_0_14_and_later_keep_a_second_password(name: str) -> None:
    flavour, dual = DUAL[name]
    assert flavour.has_dual_passwords is dual
    if dual:
        own = _retain_sql(flavour, "USER()", "'new'", "'old'")
        assert own == "ALTER USER USER() IDENTIFIED BY 'new' REPLACE 'old' RETAIN CURRENT PASSWORD"
        other = _retain_sql(flavour, "'app'@'%'", "'new'", None)
        assert other == "ALTER USER 'app'@'%' IDENTIFIED BY 'new' RETAIN CURRENT PASSWORD"
        assert _discard_sql(flavour, "USER()") == "ALTER USER USER() DISCARD OLD PASSWORD"
    else:
        # Sent to such a server, the statement would fail or (MariaDB) mean something else.
        with pytest.raises(ValueError, match="one password per account"):
            _retain_sql(flavour, "USER()", "'new'", "'old'")
        with pytest.raises(ValueError, match="one password per account"):
            _discard_sql(flavour, "USER()")


OWN_GRANTS = {
    "usage only": (["GRANT USAGE ON *.* TO `app`@`%`"], False, False),
    "application_password_admin": (
        [
            "GRANT USAGE ON *.* TO `app`@`%`",
            "GRANT APPLICATION_PASSWORD_ADMIN ON *.* TO `app`@`%`",
        ],
        True,
        False,
    ),
    "create user": (["GRANT SELECT, CREATE USER ON *.* TO `app`@`%`"], False, True),
    "all": (["GRANT ALL PRIVILEGES ON *.* TO `app`@`%`"], True, True),
    "on one database only": (["GRANT ALL PRIVILEGES ON `db`.* TO `app`@`%`"], False, False),
}


@pytest.mark.parametrize("name", sorted(OWN_GRANTS))
def test_retaining_needs_application_password_admin_for_oneself_create_user_for_others(
    name: str,
) -> None:
    lines, for_itself, for_others = OWN_GRANTS[name]
    own = _parse_grants(lines, "app", "%", dynamic=True)
    itself = _retain_verdict(own, "app", "%", "'app'@'%'", own_account=True)
    others = _retain_verdict(own, "app", "%", "'app'@'%'", own_account=False)
    assert itself.granted is for_itself
    assert others.granted is for_others
    if not for_itself:
        assert itself.fix == "GRANT APPLICATION_PASSWORD_ADMIN ON *.* TO 'app'@'%'"
        assert "applications that still hold the old one are refused" in itself.reason
    if not for_others:
        assert others.fix == "GRANT CREATE USER ON *.* TO 'app'@'%'"
