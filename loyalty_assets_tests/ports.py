"""A free loopback port, for the servers the tests start (SMTP, the API, `dagster dev`)."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
