"""``python -m rotd``: the same as the ``rotd`` command."""

from rotd.cli import main

main()
