"""The ``rotd`` command and ``python -m rotd``: the command line itself is :mod:`rotd.cli`.

``rotd run`` is usually started by a service manager, which may stop it again at once. Until
the daemon's event loop handles signals itself, importing rotd's modules takes a moment in
which a SIGTERM would kill the process by its default action; here it ends the process with
exit 0 instead, since nothing has started yet that would need draining. A SIGHUP in that
moment (a reload asked for as rotd starts, e.g. by the container's init passing it on) is
ignored: the daemon reads the inventory as it starts, and its own handler replaces this one
before it runs any command, so hooks do not inherit an ignored SIGHUP.
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
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from rotd.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
