"""infra/k8s and infra/docker, checked offline: KubeRay fields (tests/infra/kuberay.py), pod templates against the
Kubernetes schema (kubernetes-validate), GPU requests against what the job config asks for, the RayJob entrypoint
against the README's command, the RayService's import path against serve/, versions and images against each other.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import ray
import yaml

from tests.infra.kuberay import SCHEMAS, cluster_spec, pod_templates

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))
GPU = "nvidia.com/gpu"
APP = "/app"  # the images' WORKDIR: the repository's copy


def load(path: Path) -> dict:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(docs) == 1, f"{path.name}: one resource per file"
    return docs[0]


def by_kind(kind: str) -> dict:
    found = [d for d in map(load, MANIFESTS) if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in infra/k8s, found {len(found)}"
    return found[0]


def quantity(value: str | int) -> float:
    """CPU quantities: 8, "8", "500m"."""
    value = str(value)
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def node_shape(template: dict) -> tuple[float, int]:
    """(CPUs, GPUs) Ray sees on a pod: KubeRay reads them from the Ray container's limits."""
    limits = template["spec"]["containers"][0]["resources"]["limits"]
    return quantity(limits["cpu"]), int(limits.get(GPU, 0))


def dockerfile_arg(name: str, dockerfile: str) -> str:
    m = re.search(rf"^ARG {name}=\"?([^\"\n]+)\"?$", (ROOT / "infra" / "docker" / dockerfile).read_text(), re.M)
    assert m, f"{dockerfile}: no ARG {name}"
    return m.group(1)


def readme_submit_commands() -> list[str]:
    """Every `ray job submit ... -- COMMAND` in README.md, as the COMMAND."""
    lines = [ln for ln in (ROOT / "README.md").read_text().splitlines() if "ray job submit" in ln]
    return [ln.split(" -- ", 1)[1].split("#")[0].strip() for ln in lines if " -- " in ln]


def test_there_are_the_three_kinds():
    assert sorted(load(p)["kind"] for p in MANIFESTS) == ["RayCluster", "RayJob", "RayService"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_matches_kuberay_v1_fields(path):
    doc = load(path)
    assert doc.get("kind") in SCHEMAS, f"{path.name}: kind {doc.get('kind')!r} is not a KubeRay resource"
    errors = sorted(jsonschema.Draft202012Validator(SCHEMAS[doc["kind"]]).iter_errors(doc), key=str)
    assert not errors, f"{path.name}: " + "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_pod_templates_are_valid_kubernetes(path):
    version = kubernetes_validate.latest_version()
    for group, template in pod_templates(load(path)).items():
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": group}, "template": template}
        try:
            kubernetes_validate.validate(pod_template, version, strict=True)
        except jsonschema.ValidationError as e:  # kubernetes-validate raises jsonschema's own
            raise AssertionError(f"{path.name} group {group}: {'/'.join(map(str, e.path))}: {e.message}") from None
        spec = template["spec"]
        volumes = {v["name"] for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            missing = {m["name"] for m in c.get("volumeMounts", [])} - volumes
            assert not missing, f"{path.name} group {group}: mounts of undeclared volumes {missing}"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_ray_containers_images_and_gpus(path):
    doc = load(path)
    spec = cluster_spec(doc)
    version = (ROOT / "pyproject.toml").read_text().split('version = "', 1)[1].split('"', 1)[0]
    assert spec["rayVersion"] == ray.__version__ == dockerfile_arg("RAY_VERSION", "Dockerfile.cuda") \
        == dockerfile_arg("RAY_VERSION", "Dockerfile.cpu"), "rayVersion, the images' Ray and the tests' Ray differ"
    for group, template in pod_templates(doc).items():
        ray_container = template["spec"]["containers"][0]  # KubeRay runs Ray in the first container
        assert ray_container["image"] == f"registry.example.com/nla:{version}-cuda", f"{path.name} {group}"
        res = ray_container["resources"]
        assert res["requests"] == res["limits"], f"{path.name} {group}: requests != limits (Ray reads limits)"
        cpus, gpus = node_shape(template)
        assert cpus >= 1
        if group == "head":
            assert gpus == 0, f"{path.name}: the head runs the driver and readers, no GPU"
        else:
            assert gpus >= 1, f"{path.name} group {group}: a worker group without {GPU}"
            tolerated = {t["key"] for t in template["spec"].get("tolerations", [])}
            assert GPU in tolerated, f"{path.name} group {group}: GPU nodes are usually tainted {GPU}"
    for g in spec["workerGroupSpecs"]:
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], f"{path.name} {g['groupName']}"


def test_rayjob_runs_the_command_the_readme_documents():
    job = by_kind("RayJob")
    commands = readme_submit_commands()
    assert commands, "README.md documents no `ray job submit ... -- python -m nla.jobs.label ...`"
    assert set(commands) == {job["spec"]["entrypoint"]}, (commands, job["spec"]["entrypoint"])
    for f in (K8S / "raycluster.yaml", ROOT / "infra" / "ray" / "cluster.yaml"):  # their usage lines say the same
        assert any(c in f.read_text() for c in commands), f"{f.name} shows another submit command"
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert env["working_dir"] == APP, "the entrypoint's relative config path needs the repository as working dir"


def test_rayjob_cluster_is_the_raycluster():
    assert by_kind("RayJob")["spec"]["rayClusterSpec"] == by_kind("RayCluster")["spec"]


def test_rayjob_cluster_fits_its_job_config():
    """Every actor of the entrypoint's config finds a node, and the pools fit the cluster as it starts."""
    from nla.config import load_config
    from nla.labeling.config import LabelConfig

    job = by_kind("RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "nla.jobs.label"] and argv[3] == "--config"
    cfg = load_config(LabelConfig, ROOT / argv[4], argv[5:])  # unknown keys would fail here
    stages = [cfg.read] + ([cfg.explainer] if cfg.fuse else [cfg.extractor, cfg.explainer, cfg.scorer])
    spec = job["spec"]["rayClusterSpec"]
    head_cpus, _ = node_shape(spec["headGroupSpec"]["template"])
    groups = [(node_shape(g["template"]), g["replicas"]) for g in spec["workerGroupSpecs"]]
    for s in stages:
        assert any(s.num_cpus <= c and s.num_gpus <= g for (c, g), _ in groups), f"no worker node fits {s}"
    assert sum(s.concurrency * s.num_gpus for s in stages) <= sum(g * n for (_, g), n in groups)
    assert sum(s.concurrency * s.num_cpus for s in stages) <= head_cpus + sum(c * n for (c, _), n in groups)
    if cfg.models.av_backend == "vllm":
        assert cfg.vllm.tensor_parallel_size == cfg.explainer.num_gpus, "one vLLM engine per AV actor's GPUs"


def test_rayservice_builds_the_serve_app(toy_kit):
    import importlib

    from nla.errors import NLAConfigError
    from nla.serve.config import load_serve_config

    service = by_kind("RayService")
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    (app,) = serve_config["applications"]
    module, attr = app["import_path"].split(":")
    build = getattr(importlib.import_module(module), attr)
    config = app["args"]["config"]
    assert config.startswith(APP + "/") and (ROOT / config[len(APP) + 1:]).is_file(), config
    cfg = load_serve_config(ROOT / config[len(APP) + 1:], app["args"]["overrides"])  # keys exist, values check
    assert cfg.models.device == "cuda"
    gpu_groups = [(node_shape(g["template"])[1], g["maxReplicas"]) for g in service["spec"]["rayClusterConfig"][
        "workerGroupSpecs"]]
    wanted = [(d.num_gpus, d.max_replicas) for d in (cfg.extractor, cfg.av, cfg.ar, cfg.ingress, cfg.lake_reader)]
    assert all(per <= max(g for g, _ in gpu_groups) for per, _ in wanted)
    assert sum(per * n for per, n in wanted) <= sum(g * n for g, n in gpu_groups)
    # the same entry on the toy kit: Serve gets a bound application back
    from ray.serve import Application

    assert isinstance(build({"config": str(ROOT / "serve" / "config.yaml"), "overrides": []}), Application)
    with pytest.raises(NLAConfigError, match="unknown keys"):
        build({"config": str(ROOT / "serve" / "config.yaml"), "overide": []})


def test_images_install_the_project_as_dev_py_does():
    dev_torch = re.search(r'os.environ.get\("NLA_TORCH", "([^"]+)"\)', (ROOT / "dev.py").read_text()).group(1)
    assert dockerfile_arg("TORCH", "Dockerfile.cpu") == dev_torch
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    needed = {folder.split("/")[0] for folder in package_dir.values()}  # nla, jobs, serve, schemas
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for name in ("Dockerfile.cpu", "Dockerfile.cuda"):
        text = (ROOT / "infra" / "docker" / name).read_text()
        copied = set(re.findall(r"^COPY (\w+) \1$", text, re.M))
        assert needed <= copied, f"{name} does not copy {needed - copied}"
        assert re.search(rf"^WORKDIR {APP}$", text, re.M), name
        assert all(f"!{p}" in ignore for p in needed), ".dockerignore keeps a package out of the context"
    assert 'pip install ".[vllm]"' in (ROOT / "infra" / "docker" / "Dockerfile.cuda").read_text()
