"""The ``rotd`` command and ``python -m rotd``: the command line itself is :mod:`rotd.cli`.

``rotd run`` is usually started by a service manager, which may stop it again at once. Until
the daemon's event loop handles signals itself, importing rotd's modules takes a moment in
which a SIGTERM would kill the process by its default action; here it ends the process with
exit 0 instead, since nothing has started yet that would need draining.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType


def _stopped_before_start(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    if sys.argv[1:2] == ["run"]:
        signal.signal(signal.SIGTERM, _stopped_before_start)
    from rotd.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
