"""Wire the Serve application: resolve the checkpoints, then bind extractor, AV, AR and lake deployments to the ingress.

`resolve_models` reads only sidecars and config.json (no weights) and checks that base, AV and AR agree on layer K and
d; each replica then loads its own weights. `build_app` turns each DeploymentSettings into Serve options (autoscaling,
CPUs/GPUs, requests in flight). Starting Ray and Serve is serve/__main__.py's job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import serve

from nla.errors import NLAConfigError
from serve.codec import jsonable
from serve.config import DeploymentSettings, ModelsConfig, ServeConfig


def _folder(value: str, role: str) -> str:
    if value == "toy":
        from nla.toy.build import ensure_toy_kit

        return str(ensure_toy_kit() / role)
    return str(Path(value).expanduser().resolve()) if value else ""


def resolve_models(m: ModelsConfig) -> dict[str, Any]:
    """What the ingress knows about the models: folders, ids, sidecars, d_model and layer K (checked to agree)."""
    from nla.client import check_checkpoint, check_weights
    from nla.labeling.plan import checkpoint_id, hidden_size

    av = _folder(m.av, "av")
    if not av:
        raise NLAConfigError("models.av is empty: the server explains with an AV. Fix: set models.av=DIR (or toy).")
    av_meta = check_checkpoint(av, "av")  # a bad folder fails here, before the toy kit is looked up for the others
    ar, base = _folder(m.ar, "ar"), _folder(m.base, "base")
    d, layer = av_meta.d_model, av_meta.layer
    info: dict[str, Any] = {"d_model": d, "layer": layer, "ar": None, "base": None,
                            "av": {"path": av, "id": checkpoint_id(av), "sidecar": jsonable(av_meta.to_dict())}}
    if ar:
        ar_meta = check_checkpoint(ar, "ar")
        if (ar_meta.layer, ar_meta.d_model) != (layer, d):
            raise NLAConfigError(f"models.ar {ar} reads layer {ar_meta.layer} (d={ar_meta.d_model}) but models.av {av} "
                                 f"reads layer {layer} (d={d}). Fix: use the AV/AR pair trained together.")
        info["ar"] = {"path": ar, "id": checkpoint_id(ar), "sidecar": jsonable(ar_meta.to_dict())}
    if base:
        base_d = hidden_size(base)  # config.json read directly: importing transformers here is 2-3 s of start-up
        if base_d != d:
            raise NLAConfigError(f"models.base {base} has d={base_d} but the AV reads d={d}. Fix: point models.base at "
                                 f"the AV's base ({av_meta.base_checkpoint}).")
        check_weights(base)
        info["base"] = {"path": base, "id": checkpoint_id(base)}
    return info


def resolve_lake(root: str) -> str:
    """The lake root as the replicas must see it: $NLA_LAKE or ./lake when empty, local folders made absolute."""
    from nla.lake.store import Lake

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
    from serve.ingress import Ingress
    from serve.lake import LakeReader
    from serve.models import ARModel, AVModel, ExtractorModel

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
    lake = serve.deployment(LakeReader, **_options("lake", cfg.lake_reader)).bind(
        resolve_lake(cfg.lake), timeout_s=lim.query_timeout_s, refresh_s=cfg.lake_refresh_s,
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
