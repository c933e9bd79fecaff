"""The kit's pytest plugin: ``pytest_plugins = ["rotd.testing.plugin"]`` in a conftest.

``kit_aws`` (session): moto's server, made to answer like Secrets Manager
(:mod:`rotd.testing.secretsmanager`), on a free port; the process gets dummy AWS credentials.
Override it to point the kit at another Secrets Manager endpoint.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import pytest

from rotd.testing.aws import REGION, MotoServer, dummy_credentials, moto_server


@pytest.fixture(scope="session")
def kit_aws() -> Iterator[MotoServer]:
    dummy_credentials(REGION)
    with tempfile.TemporaryFile() as log, moto_server(log) as server:
        yield server
