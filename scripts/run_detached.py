"""Run a command with SIGINT and SIGTERM at their default actions, so it stops when signalled.

A process started in the background inherits SIGINT as ignored, and `dagster dev` maps SIGTERM
onto SIGINT, so it would ignore both. Start this wrapper with ``start_new_session=True`` and stop
the whole process group with ``os.killpg(pgid, SIGTERM)`` (then SIGKILL after a timeout):

    python scripts/run_detached.py dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000
"""

from __future__ import annotations

import os
import signal
import sys


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: run_detached.py COMMAND [ARG ...]")
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
