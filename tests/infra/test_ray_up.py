"""infra/ray/cluster.yaml is a config `ray up` accepts: the JSON schema Ray ships (ray/autoscaler/ray-schema.json),
then Ray's own defaults merge and checks (prepare_config, validate_config), all offline (no cloud is contacted).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import ray
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "infra" / "ray" / "cluster.yaml"


def test_cluster_yaml_matches_rays_schema():
    cfg = yaml.safe_load(CLUSTER.read_text())
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(cfg), key=str)
    assert not errors, "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_ray_prepares_and_validates_it():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = prepare_config(copy.deepcopy(yaml.safe_load(CLUSTER.read_text())))
    validate_config(cfg)
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    workers = [t for t in types if t != cfg["head_node_type"]]
    assert workers and all(types[t]["max_workers"] <= cfg["max_workers"] for t in workers)


def test_nodes_run_the_nla_image_and_start_ray():
    cfg = yaml.safe_load(CLUSTER.read_text())
    version = (ROOT / "pyproject.toml").read_text().split('version = "', 1)[1].split('"', 1)[0]
    assert cfg["docker"]["image"] == f"registry.example.com/nla:{version}-cuda"
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in cfg["worker_start_ray_commands"])
    mounts = " ".join(cfg["docker"]["run_options"])
    assert "-v /data:/data" in mounts and "-v /models:/models" in mounts  # the paths the job configs read
