"""Joining Ray, for every job and the server: `ray.init` in one place, after nla/rayaddress.py has decided where.

A cluster Ray itself cannot find (`ray_address=auto` with no Ray running on this machine, a `ray://` address whose
client server does not answer) is one line naming the address and the fix, raised before a job records its run.
"""

from __future__ import annotations

import os
from typing import Any

from nla.errors import NLAConfigError


def start_ray(address: str | None, configured: str = "", **init: Any) -> None:
    """Join the cluster at `address` (what `cluster_address(configured)` returned), or start a local Ray with every
    core when None. `configured` is the config's ray_address ("": the address came from $RAY_ADDRESS). No-op when
    this process is already connected (a test or a notebook that called `ray.init` itself)."""
    import ray

    if ray.is_initialized():
        return
    try:
        ray.init(address=address, include_dashboard=False, **({} if address else {"num_cpus": os.cpu_count()}),
                 **init)
    except ConnectionError as e:
        key = "ray_address" if configured else "RAY_ADDRESS"
        raise NLAConfigError(
            f"{key}={address}: Ray found no cluster to join ({str(e).split('. ')[0].rstrip('.')}). Fix: start one "
            "here (`ray start --head`), write the head's host:port (as `ray status` prints it) instead, or leave "
            "ray_address and RAY_ADDRESS empty to start a local Ray.") from None
