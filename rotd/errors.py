"""The errors rotd raises, built from fields so that logs and metrics can use the fields.

I/O edges translate their library's exceptions into these; nothing above the edges catches a
driver's or botocore's types. Messages never carry a password, hash or secret string: they are
built here from identifiers and categories only, and anything quoted from a server passes
through the redactor first.
"""

from __future__ import annotations

from enum import StrEnum


class Category(StrEnum):
    """What went wrong, in the words an operator acts on. Drives retries and metrics."""

    UNREACHABLE = "unreachable"  # DNS, TCP refused/reset, endpoint down
    TIMEOUT = "timeout"  # a deadline passed
    THROTTLED = "throttled"  # the service asked us to slow down
    SERVER = "server"  # a 5xx or an unexpected server-side failure
    AUTH = "auth"  # a login was refused
    PERMISSION = "permission"  # authenticated but not allowed
    TLS = "tls"  # TLS required, refused or not verifiable
    NOT_FOUND = "not_found"  # a secret, version or user does not exist
    BAD_SECRET = "bad_secret"  # the secret's JSON is unusable
    NAME_TOO_LONG = "name_too_long"  # the clone's name does not fit the server's limit
    CONFLICT = "conflict"  # another rotator owns this secret (native rotation enabled)
    SHARED_LOGIN = "shared_login"  # another secret of the inventory holds the same login
    REPLICA = "replica"  # a read-only replica of a multi-region secret, not its primary
    LOCKED = "locked"  # another rotd process is rotating it right now
    UNSUPPORTED = "unsupported"  # an engine or feature rotd does not handle
    TEST_FAILED = "test_failed"  # the new login works but the test query failed
    COMMAND_FAILED = "command_failed"  # an engine's command (exec) said it failed for good
    INTERNAL = "internal"  # an exception rotd did not expect: a fault in rotd itself

    @property
    def transient(self) -> bool:
        """True when waiting and trying again may succeed without anyone changing anything."""
        return self in _TRANSIENT


# INTERNAL counts as transient: a fault in rotd must never drop a secret from the schedule,
# so it is retried with backoff like any passing trouble, and counted apart
# (rotd_unexpected_errors_total) so that it is seen.
_TRANSIENT = frozenset(
    {
        Category.UNREACHABLE,
        Category.TIMEOUT,
        Category.THROTTLED,
        Category.SERVER,
        Category.LOCKED,
        Category.INTERNAL,
    }
)


class Missing(StrEnum):
    """What Secrets Manager could not find: a missing version or value is not a missing secret."""

    SECRET = "secret"  # no secret by that name or ARN in the region
    VERSION = "version"  # the secret exists, without a version of that id
    STAGE = "stage"  # the secret exists, and no version carries that staging label
    VALUE = "value"  # the version exists (labelled) but was never given a value


class RotdError(Exception):
    """The root of every error rotd raises on purpose."""

    category: Category = Category.SERVER

    @property
    def transient(self) -> bool:
        return self.category.transient


class ConfigError(RotdError):
    """One problem in an inventory file, located by line and column (both 1-based)."""

    def __init__(self, path: str, line: int, column: int, reason: str) -> None:
        self.path = path
        self.line = line
        self.column = column
        self.reason = reason
        super().__init__(f"{path}:{line}:{column}: {reason}")


class ConfigErrors(RotdError):
    """Every problem found in one inventory file; validation reports them all at once."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class DatabaseError(RotdError):
    """A database could not do what a rotation asked of it."""

    def __init__(self, host: str, port: int, category: Category, reason: str) -> None:
        self.host = host
        self.port = port
        self.category = category
        self.reason = reason
        # Set when the failure happened while opening a session: only then does it say
        # anything about the host being down (a cut mid-statement does not).
        self.connecting = False
        # Set when the server refused a new password itself (its password policy or history),
        # so that the statement changed nothing: that password was never accepted.
        self.password_refused = False
        super().__init__(f"{host}:{port}: {reason}")


class StoreError(RotdError):
    """Secrets Manager refused or failed a call; ``missing`` says what was not found."""

    def __init__(
        self,
        secret: str,
        operation: str,
        category: Category,
        reason: str,
        *,
        missing: Missing | None = None,
    ) -> None:
        self.secret = secret
        self.operation = operation
        self.category = category
        self.reason = reason
        self.missing = missing
        # Set when the client had sent the call more than once: an earlier attempt whose
        # answer was lost may have been carried out.
        self.retried = False
        super().__init__(f"{operation} on secret {secret!r}: {reason}")


class AwsError(RotdError):
    """An AWS service other than Secrets Manager (STS, IAM, KMS) refused or failed a call."""

    def __init__(self, operation: str, category: Category, reason: str) -> None:
        self.operation = operation
        self.category = category
        self.reason = reason
        super().__init__(f"{operation}: {reason}")


class SecretError(RotdError):
    """A rotation of one secret failed at one step; the cause is kept in ``__cause__``."""

    def __init__(self, secret: str, step: str, category: Category, reason: str) -> None:
        self.secret = secret
        self.step = step
        self.category = category
        self.reason = reason
        super().__init__(f"secret {secret!r}, {step}: {reason}")


class UnexpectedError(RotdError):
    """An exception no code path expected, raised during one step of one secret's rotation.

    The protocol raises it so that the runner's boundary can name the step; the exception
    itself, with its traceback, is ``__cause__``.
    """

    def __init__(self, secret: str, step: str, cause: Exception) -> None:
        self.secret = secret
        self.step = step
        self.cause = cause
        super().__init__(f"secret {secret!r}, {step}: unexpected {type(cause).__name__}: {cause}")


class EngineError(RotdError):
    """An engine is not installed, cannot be loaded, or cannot do what a secret asks of it.

    Always permanent (UNSUPPORTED): installing a package or changing the secret or inventory
    is what fixes it, never waiting.
    """

    category = Category.UNSUPPORTED

    def __init__(self, engine: str, reason: str) -> None:
        self.engine = engine
        self.reason = reason
        super().__init__(f"engine {engine!r}: {reason}")
