"""The job tests' drivers join one Ray cluster (`RAY_ADDRESS`) started once for this package, as jobs submitted to
a real cluster do, instead of each starting a local Ray of its own (4-5 s each on 2 cores). The fault tests in
tests/reliability share one cluster the same way (tests/reliability/conftest.py)."""

from __future__ import annotations

import pytest

from tests.raycluster import running


@pytest.fixture(scope="package", autouse=True)
def shared_ray():
    # 4 logical CPUs on the 2 cores: a label job asks for 1.25, a 2-worker training run for 1 plus its controller
    with running([(4, {})]) as cluster, pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_ADDRESS", cluster.address)
        for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
            env.setenv(k, cluster.env[k])
        yield cluster
