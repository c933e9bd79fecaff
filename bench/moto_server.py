"""moto's server for the benchmark, with secrets found by name or ARN in constant time.

Run as ``python -m bench.moto_server -H 127.0.0.1 -p PORT``. moto keeps a region's secrets in
a dict keyed by name but finds each one by scanning them all for its name or ARN, several
times per call: at 10,000 secrets a BatchGetSecretValue of 20 costs it about 15 ms of CPU, and
the benchmark's start-up figures measured moto, not rotd. Secrets Manager itself answers in
time independent of the number of secrets. This module indexes the ARNs and looks names up
directly; what each call answers is unchanged (a miss falls back to moto's own scan).
"""

from __future__ import annotations

from typing import Any

from moto import server
from moto.secretsmanager.models import SecretsStore
from moto.secretsmanager.utils import get_secret_name_from_partial_arn

_set = SecretsStore.__setitem__
_MISSING = object()


def _arns(store: Any) -> dict[str, str]:
    index: dict[str, str] | None = store.__dict__.get("_rotd_arns")
    if index is None:
        index = {secret.arn: name for name, secret in dict.items(store)}
        store.__dict__["_rotd_arns"] = index
    return index


def _find(store: Any, key: str) -> Any:
    """The secret named ``key`` (its name or ARN), or _MISSING."""
    found = dict.get(store, key, _MISSING)
    if found is not _MISSING and found.name == key:
        return found
    name = _arns(store).get(key)
    if name is not None:
        secret = dict.get(store, name, _MISSING)
        if secret is not _MISSING and secret.arn == key:
            return secret
    for secret in dict.values(store):  # moto's own rule, for whatever the index missed
        if secret.arn == key or secret.name == key:
            return secret
    return _MISSING


def _setitem(self: Any, key: str, value: Any) -> None:
    _set(self, key, value)
    _arns(self)[value.arn] = key


def _getitem(self: Any, key: str) -> Any:
    found = _find(self, key)
    if found is not _MISSING:
        return found
    return dict.__getitem__(self, get_secret_name_from_partial_arn(key))


def _contains(self: Any, key: str) -> bool:
    if _find(self, key) is not _MISSING:
        return True
    return dict.__contains__(self, get_secret_name_from_partial_arn(key))


def _get(self: Any, key: str) -> Any:
    found = _find(self, key)
    if found is not _MISSING:
        return found
    return dict.get(self, get_secret_name_from_partial_arn(key))


SecretsStore.__setitem__ = _setitem  # type: ignore[method-assign]
SecretsStore.__getitem__ = _getitem  # type: ignore[method-assign]
SecretsStore.__contains__ = _contains  # type: ignore[assignment,method-assign]
SecretsStore.get = _get  # type: ignore[assignment,method-assign]

if __name__ == "__main__":
    server.main()
