"""Wire the Serve application: resolve the checkpoints, then bind extractor, AV, AR and lake deployments to the ingress.

`resolve_models` reads only sidecars and config.json (no weights) and checks that base, AV and AR agree on layer K and
d; each replica then loads its own weights. `build_app` turns each DeploymentSettings into Serve options (autoscaling,
CPUs/GPUs, requests in flight). Starting Ray and Serve is serve/__main__.py's job.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ray import serve

from nla.lake import DEMO_DIR
from nla.lake.store import DEFAULT_LAKE, Lake
from nla.settings import ModelsConfig
from nla.serve.codec import jsonable
from nla.serve.config import DeploymentSettings, ServeConfig


def resolve_models(m: ModelsConfig) -> dict[str, Any]:
    """What the ingress knows about the models: folders, ids, sidecars, d_model and layer K (nla.pair checks that they
    form a pair, exactly as the labeling planner does)."""
    from nla.pair import resolve_pair

    pair = resolve_pair(av=m.av, ar=m.ar, base=m.base, what="the server")
    ck = {"av": pair.av, "ar": pair.ar, "base": pair.base}
    info: dict[str, Any] = {"d_model": pair.d, "layer": pair.layer}
    for role, c in ck.items():
        meta = {"av": pair.av_meta, "ar": pair.ar_meta}.get(role)
        info[role] = None if c is None else {"path": c.path, "id": c.id, **({"sidecar": jsonable(meta.to_dict())}
                                                                          if meta is not None else {})}
    return info


def resolve_lake(root: str) -> str:
    """The lake root as the replicas must see it: $NLA_LAKE or ./lake when empty, local folders made absolute. When
    none was named and there is no ./lake but `nla demo` left its lake here, that one (read-only: the explorer shows
    the demo without a flag; the startup line says which lake it is)."""
    demo = Path(DEMO_DIR) / "lake"
    if not (root or os.environ.get("NLA_LAKE") or Path(DEFAULT_LAKE).exists()) and (demo / "explanations").is_dir():
        root = str(demo)
    lake = Lake(root or None)
    return lake.root if not lake.is_local else str(Path(lake.root).expanduser().resolve())


def _options(name: str, s: DeploymentSettings) -> dict[str, Any]:
    return {"name": name, "max_ongoing_requests": s.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": s.num_cpus, "num_gpus": s.num_gpus},
            "autoscaling_config": {"min_replicas": s.min_replicas, "max_replicas": s.max_replicas,
                                   "initial_replicas": s.min_replicas,
                                   "target_ongoing_requests": s.target_ongoing_requests}}


def build_app(cfg: ServeConfig, info: dict[str, Any], token_digest: str | None) -> Any:
    """The bound Serve application (ingress at the root route)."""
    from nla.serve.ingress import Ingress
    from nla.serve.lake import LakeReader
    from nla.serve.models import ARModel, AVModel, ExtractorModel

    m, lim = cfg.models, cfg.limits
    device = {"device": m.device, "dtype": m.dtype}
    extractor = None
    if info["base"]:
        extractor = serve.deployment(ExtractorModel, **_options("extractor", cfg.extractor)).bind(
            info["base"]["path"], info["layer"], cfg.extractor, **device, max_tokens=lim.max_tokens,
            max_positions=lim.max_vectors)
    av = serve.deployment(AVModel, **_options("av", cfg.av)).bind(info["av"]["path"], cfg.av, **device)
    ar = None
    if info["ar"]:
        ar = serve.deployment(ARModel, **_options("ar", cfg.ar)).bind(info["ar"]["path"], cfg.ar, **device)
    root = resolve_lake(cfg.lake)
    # the driver resolves the storage options once (its AWS_* environment): replicas on other nodes may lack it
    lake = serve.deployment(LakeReader, **_options("lake", cfg.lake_reader)).bind(
        root, storage_options=Lake(root).storage_options, timeout_s=lim.query_timeout_s, refresh_s=cfg.lake_refresh_s,
        memory_limit=lim.query_memory_limit, max_bytes=lim.query_max_bytes)
    return serve.deployment(Ingress, **_options("ingress", cfg.ingress)).bind(
        extractor, av, ar, lake, info=info, limits=lim, token_digest=token_digest, mount=mount_settings(cfg))


def mount_settings(cfg: ServeConfig) -> dict[str, Any]:
    """What the Neuronpedia mount reports and needs: the root switch, the device, and what the deployments hold at
    once (their health JSON's concurrency fields)."""
    def in_flight(s: DeploymentSettings) -> int:
        return s.max_ongoing_requests * s.max_replicas

    return {"at_root": cfg.http.neuronpedia_at_root, "device": cfg.models.device,
            "av_batch": cfg.av.max_batch_size * cfg.av.max_replicas, "av_in_flight": in_flight(cfg.av),
            "extractor_in_flight": in_flight(cfg.extractor), "ar_in_flight": in_flight(cfg.ar)}
