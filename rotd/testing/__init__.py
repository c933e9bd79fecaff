"""The conformance kit: rotd's engine contract as tests to run against a live server.

Imported only by test suites (it needs pytest and pytest-asyncio: ``pip install
'rotd[testing]'``). An engine author writes a :class:`Target` for a server they run, loads
the plugin and subclasses :class:`Conformance`::

    # conftest.py
    pytest_plugins = ["rotd.testing.plugin"]

    # test_conformance.py
    class TestAcme(Conformance):
        @pytest.fixture
        def target(self): return AcmeTarget(...)

See README.md, "Writing an engine".
"""

from rotd.testing.conformance import Conformance
from rotd.testing.faults import Cut, CuttingEngine, CuttingSession, CuttingStore, Pause
from rotd.testing.kit import Kit
from rotd.testing.target import Target, engine_logs_in

__all__ = [
    "Conformance",
    "Cut",
    "CuttingEngine",
    "CuttingSession",
    "CuttingStore",
    "Kit",
    "Pause",
    "Target",
    "engine_logs_in",
]
