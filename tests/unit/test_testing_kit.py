"""The conformance kit (rotd.testing) ships in the package but stays out of rotd's runtime."""

from __future__ import annotations

import subprocess
import sys


def test_rotd_at_run_time_imports_neither_the_kit_nor_pytest() -> None:
    # The image and a production install have no pytest: only test suites import the kit.
    script = (
        "import sys\n"
        "import rotd.cli, rotd.daemon, rotd.doctor, rotd.demo, rotd.engines.builtin\n"
        "roots = ('rotd.testing', 'pytest', '_pytest', 'pytest_asyncio', 'moto')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in roots or m == roots[0]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
