"""Failures this suite has found in rotd, described for the messages of the tests.

All of them are fixed. ``test_cuts`` reproduces each on purpose, and fails if one comes back;
``test_faults`` names FENCE in its report when no label logs in, and CLONE when a clone's
AWSCURRENT cannot read its table, and fails either way: no test here expects a failure. A
defect found and not yet fixed gets a test that fails and a note in docs/reliability.md,
never a marker that expects the failure.
"""

from __future__ import annotations

__all__ = ["CLONE_BUG", "FENCE_BUG", "FINISH_BUG", "RACE_BUG"]

CLONE_BUG = (
    "rotd bug: MySQL/MariaDB mirror_user creates a missing clone WITH the pending password "
    "before copying the original's grants (rotd/engines/mysql.py, mirror_user/_create_clone); "
    "cut off in between, the resumed rotation finds the pending login working, skips setSecret "
    "(rotd/protocol.py, 'rotation.step_skipped') and makes AWSCURRENT a clone without the "
    "original's privileges"
)
FINISH_BUG = (
    "rotd bug: finishSecret is not idempotent: when the answer to UpdateSecretVersionStage is "
    "lost, botocore retries it, Secrets Manager refuses the retry (AWSCURRENT is no longer on "
    "RemoveFromVersionId) and rotd reports a failed, non-transient rotation (a daemon parks "
    "the secret) although AWSCURRENT is on the new version"
)
RACE_BUG = (
    "rotd bug: single user: a rotation that read AWSCURRENT before another process rotated the "
    "secret logs in with the retired password, is refused, and fails as a permanent 'auth' "
    "error (a daemon parks the secret, 'fix the secret') instead of seeing that the secret "
    "moved (rotd/protocol.py, _lock_session and strategies.first_login)"
)
FENCE_BUG = (
    "rotd bug: a PutSecretValue delayed in the network past the loss of its process's lock "
    "moved AWSPENDING away from the rotation that holds the lock now: the version id of a "
    "rotation must follow from the AWSCURRENT it replaces (rotd/protocol.py, version_token), "
    "so that Secrets Manager refuses the late write; with a random id, a single-user secret "
    "can have neither label logging in"
)
