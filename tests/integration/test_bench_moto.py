"""The benchmark's moto server finds secrets by name, ARN and partial ARN as moto does."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from rotd.testing.aws import moto_server


def test_lookups_answer_as_plain_moto(tmp_path: Path) -> None:
    with open(tmp_path / "moto.log", "wb") as log, moto_server(log, "bench.moto_server") as moto:
        client = boto3.client(
            "secretsmanager",
            endpoint_url=moto.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        arns = {
            name: client.create_secret(Name=name, SecretString=name)["ARN"]
            for name in ("app/one", "app/two", "app/one-x")
        }
        for name, arn in arns.items():
            for key in (name, arn, arn.rsplit("-", 1)[0]):  # name, ARN, partial ARN
                assert client.get_secret_value(SecretId=key)["SecretString"] == name
        batch = client.batch_get_secret_value(SecretIdList=[arns["app/two"], "app/one"])
        assert sorted(v["SecretString"] for v in batch["SecretValues"]) == ["app/one", "app/two"]
        client.delete_secret(SecretId="app/two", ForceDeleteWithoutRecovery=True)
        with pytest.raises(ClientError, match="ResourceNotFoundException"):
            client.get_secret_value(SecretId=arns["app/two"])
