"""ServeConfig: everything `nla serve` / `python -m nla.serve` reads from YAML (+ key=value overrides).

One dataclass per section, a comment on every field; unknown keys are refused (nla.config.load_config). Ray
resources and autoscaling are plain numbers here; serve/app.py hands them to Ray Serve. The bearer token is never
in this file: it comes from the environment variable NLA_API_TOKEN.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from nla.config import load_config
from nla.errors import NLAConfigError
from nla.settings import ModelsConfig

TOKEN_ENV = "NLA_API_TOKEN"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class DeploymentSettings:
    min_replicas: int = 1  # autoscaling floor
    max_replicas: int = 1  # autoscaling ceiling (one model copy per replica)
    target_ongoing_requests: float = 4.0  # Serve adds replicas when requests in flight per replica exceed this
    max_ongoing_requests: int = 32  # requests one replica holds at once (the rest wait in the proxy's queue)
    num_cpus: float = 0.25  # CPUs reserved per replica (fractions let small models share a core)
    num_gpus: float = 0.0  # GPUs per replica
    threads: int = 0  # torch CPU threads per replica; 0 = torch's default
    max_batch_size: int = 8  # requests merged into one model call (@serve.batch)
    batch_wait_timeout_s: float = 0.01  # how long the first request of a batch waits for others


@dataclass
class HTTPSettings:
    host: str = "127.0.0.1"  # loopback by default; 0.0.0.0 exposes the API (set NLA_API_TOKEN first)
    port: int = 8000
    request_timeout_s: float = 120.0  # the proxy answers 408 past this
    access_log: bool = False  # one log line per request in the replica logs (costs CPU under load)
    neuronpedia_at_root: bool = False  # also answer Neuronpedia's NLA API at / (its health JSON replaces the page)


@dataclass
class Limits:
    max_body_bytes: int = 4 * 2**20  # request bodies over this are refused (413)
    max_vectors: int = 64  # vectors or positions per request
    max_samples: int = 8  # explanations per vector
    max_new_tokens: int = 256  # AV tokens per explanation
    max_text_chars: int = 20_000  # characters per text or explanation
    max_tokens: int = 1024  # tokens a text is cut to before extraction
    max_explanations: int = 64  # explanations per reconstruct/score request
    max_k: int = 100  # nearest neighbours per search
    query_max_rows: int = 1000  # rows one /v1/query answers
    query_timeout_s: float = 10.0  # a query is cut off after this
    query_memory_limit: str = "1GB"  # DuckDB memory one lake replica's queries may use
    query_max_bytes: int = 16 * 2**20  # a /v1/query result over this many bytes is refused
    max_concurrent_explains: int = 4  # Neuronpedia mount: /explain requests in flight per ingress replica (429 past)


@dataclass
class ServeConfig:
    lake: str = ""  # lake root; "" = $NLA_LAKE, else ./lake, else ./nla-demo/lake (read-only here; jobs write it)
    lake_refresh_s: float = 10.0  # the lake deployment looks for new table versions at most this often
    ray_address: str = ""  # "" = $RAY_ADDRESS if set, else a local Ray
    models: ModelsConfig = field(default_factory=ModelsConfig)
    http: HTTPSettings = field(default_factory=HTTPSettings)
    limits: Limits = field(default_factory=Limits)
    # the HTTP ingress does no model work: a sliver of CPU, many requests in flight
    ingress: DeploymentSettings = field(default_factory=lambda: DeploymentSettings(num_cpus=0.1,
                                                                                 max_ongoing_requests=256,
                                                                                 target_ongoing_requests=64))
    extractor: DeploymentSettings = field(default_factory=DeploymentSettings)
    av: DeploymentSettings = field(default_factory=DeploymentSettings)
    ar: DeploymentSettings = field(default_factory=DeploymentSettings)
    lake_reader: DeploymentSettings = field(default_factory=lambda: DeploymentSettings(num_cpus=0.1))


def load_serve_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ServeConfig:
    """The config at `path` (None: the defaults, which serve the toy kit) with key=value overrides, checked."""
    cfg = load_config(ServeConfig, path, overrides)
    for name in ("ingress", "extractor", "av", "ar", "lake_reader"):
        d: DeploymentSettings = getattr(cfg, name)
        if not 1 <= d.min_replicas <= d.max_replicas:
            raise NLAConfigError(f"config: {name}.min_replicas {d.min_replicas} / max_replicas {d.max_replicas}: "
                                 "need 1 <= min_replicas <= max_replicas.")
        if d.max_batch_size < 1 or d.max_ongoing_requests < 1:
            raise NLAConfigError(f"config: {name}.max_batch_size and max_ongoing_requests must be >= 1.")
    if not 0 < cfg.http.port < 65536:
        raise NLAConfigError(f"config: http.port {cfg.http.port} is not a TCP port. Fix: pick 1..65535, e.g. 8000.")
    for key, value in vars(cfg.limits).items():
        if isinstance(value, (int, float)) and value <= 0:
            raise NLAConfigError(f"config: limits.{key} is {value}; limits must be positive. Fix: raise it, or "
                                 "drop the key for its default.")
    if not re.fullmatch(r"\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*", cfg.limits.query_memory_limit):
        raise NLAConfigError(f"config: limits.query_memory_limit is {cfg.limits.query_memory_limit!r}. Fix: a size "
                             "such as 1GB or 512MB.")
    return cfg
