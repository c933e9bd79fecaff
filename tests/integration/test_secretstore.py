"""Secrets Manager's refusals as rotd's store reports them, against moto's server."""

from __future__ import annotations

import uuid

import pytest

from rotd.errors import Category, Missing, StoreError
from rotd.secretstore import AwsConnection, AwsSecretStore
from tests.fixtures.aws import MotoServer, Secrets


async def test_a_missing_version_label_or_value_is_not_a_missing_secret(
    secrets: Secrets, moto: MotoServer
) -> None:
    name = await secrets.create("store", {"username": "u", "password": "Pw-store-1"})
    absent = str(uuid.uuid4())
    connection = AwsConnection(region=moto.region, endpoint_url=moto.endpoint_url)

    async def refused(secret_id: str, **which: str) -> StoreError:
        async with AwsSecretStore(connection) as store:
            with pytest.raises(StoreError) as caught:
                await store.get_value(secret_id, **which)
        assert caught.value.category is Category.NOT_FOUND
        return caught.value

    error = await refused(secrets.name("never-created"), stage="AWSCURRENT")
    assert error.missing is Missing.SECRET
    assert "no secret has this name or ARN in this region" in error.reason

    error = await refused(name, version_id=absent)
    assert error.missing is Missing.VERSION
    assert error.reason == f"the secret has no version {absent}"

    empty = secrets.name("empty")
    async with secrets.client() as client:
        await client.create_secret(Name=empty)  # a secret without any version yet
    secrets.created.append(empty)
    error = await refused(empty)  # no version named: AWSCURRENT's
    assert error.missing is Missing.STAGE
    assert error.reason == "no version of the secret carries the label AWSCURRENT"

    error = await refused(name, stage="AWSPREVIOUS")
    assert error.missing is Missing.STAGE
    assert error.reason == "no version of the secret carries the label AWSPREVIOUS"

    token = await secrets.start_rotation_without_function(name)
    for which in ({"version_id": token}, {"stage": "AWSPENDING"}):
        error = await refused(name, **which)
        assert error.missing is Missing.VALUE
        assert error.reason == (
            f"version {token} (AWSPENDING) exists but holds no value: a rotation staged it and "
            "its createSecret never wrote it"
        )
        assert str(error).startswith(f"get_secret_value on secret {name!r}: version {token}")
