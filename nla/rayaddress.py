"""Which Ray cluster a job or the server joins, decided in one place: the config's `ray_address`, else $RAY_ADDRESS,
else none (the job starts a local Ray). An address where nothing answers is refused at once: `ray.init` would retry
it without end, printing a warning every few seconds. No Ray here: a TCP probe of the head's GCS port."""

from __future__ import annotations

import os
import socket

from nla.errors import NLAConfigError

PROBE_SECONDS = 5.0


def cluster_address(configured: str = "") -> str | None:
    """The address to hand `ray.init` (None: start a local Ray). `auto` and `local` pass through as Ray reads them;
    `host:port` and `ray://host:port` must answer on that port."""
    key, address = ("ray_address", configured) if configured else ("RAY_ADDRESS", os.environ.get("RAY_ADDRESS", ""))
    address = address.strip()
    if not address:
        return None
    if address in ("auto", "local"):
        return address
    host, port = _host_port(address, key)
    try:
        socket.create_connection((host, port), PROBE_SECONDS).close()
    except OSError as e:
        unset = "leave ray_address empty" if key == "ray_address" else "unset RAY_ADDRESS"
        raise NLAConfigError(
            f"{key}={address}: no Ray cluster answers at {host}:{port} ({e.strerror or e}). Fix: start a head there "
            f"(`ray start --head --port {port}`), point {key} at a running head's address (host:port, as "
            f"`ray status` prints it), or {unset} to start a local Ray.") from None
    return address


def _host_port(address: str, key: str) -> tuple[str, int]:
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise NLAConfigError(f"{key}={address}: not a Ray address. Fix: write host:port (e.g. 10.0.0.5:6379, the "
                             "head's GCS address), ray://host:port for a Ray client server, or auto.")
    return host, int(port)
