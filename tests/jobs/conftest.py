"""The job tests' drivers join the session's Ray cluster (`RAY_ADDRESS`; tests/conftest.py), as jobs submitted to
a real cluster do, instead of each starting a local Ray of its own. The fault tests in tests/reliability join the
same cluster (their `Run`)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package", autouse=True)
def shared_ray(ray_cluster, toy_kit):  # the jobs run the toy config: the kit is built before any starts
    with pytest.MonkeyPatch.context() as env:
        for k, v in ray_cluster.client_env().items():
            env.setenv(k, v)
        yield ray_cluster
