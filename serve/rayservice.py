"""The Serve application builder that a KubeRay RayService (infra/k8s/rayservice.yaml) names as its import path.

    applications:
      - name: nla
        import_path: nla.serve.rayservice:build
        args: {config: /app/serve/config.yaml, overrides: [models.device=cuda, av.num_gpus=1, ...]}

Serve calls `build(args)` on the cluster; it reads the same config and key=value overrides as `nla serve`, checks
the models, and returns the bound application (serve/app.py). It does not start Ray or Serve, and it does not pick
the host or port: the RayService's cluster runs both, and serveConfigV2's http_options set the address. The bearer
token comes from $NLA_API_TOKEN in the pods' environment, as with `nla serve`.
"""

from __future__ import annotations

from typing import Any

from nla.errors import NLAConfigError
from nla.serve.app import build_app, resolve_models
from nla.serve.config import load_serve_config
from nla.serve.security import token_digest


def build(args: dict[str, Any]) -> Any:
    """args: {config: YAML path (optional), overrides: list of key=value (optional)} -> the Serve application."""
    unknown = set(args) - {"config", "overrides"}
    if unknown:
        raise NLAConfigError(f"serveConfigV2 args: unknown keys {sorted(unknown)}. Fix: pass only config (a YAML path) "
                             "and overrides (a list of key=value).")
    cfg = load_serve_config(args.get("config") or None, [str(o) for o in args.get("overrides") or []])
    return build_app(cfg, resolve_models(cfg.models), token_digest())
