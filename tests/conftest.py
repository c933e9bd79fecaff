"""Fixtures shared by every test: real servers, each started or checked once per session."""

from tests.fixtures.accounts import *  # noqa: F403
from tests.fixtures.aws import *  # noqa: F403
from tests.fixtures.bridge import *  # noqa: F403
from tests.fixtures.databases import *  # noqa: F403
from tests.fixtures.iam import *  # noqa: F403
from tests.fixtures.mariadb import *  # noqa: F403
from tests.fixtures.postgres import *  # noqa: F403
from tests.fixtures.process import *  # noqa: F403
from tests.fixtures.redis import *  # noqa: F403
from tests.fixtures.rotation import *  # noqa: F403

# The conformance kit's fixtures (kit_aws), as an engine author loads them.
pytest_plugins = ["rotd.testing.plugin"]
