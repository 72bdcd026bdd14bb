"""The job tests' drivers join the session's Ray cluster (`RAY_ADDRESS`; tests/conftest.py), as jobs submitted to
a real cluster do, instead of each starting a local Ray of its own. The fault tests in tests/reliability join the
same cluster (their `Run`)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package", autouse=True)
def shared_ray(ray_cluster):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_ADDRESS", ray_cluster.address)
        for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
            env.setenv(k, ray_cluster.env[k])
        yield ray_cluster
