"""LabelConfig: everything `nla label` / `nla extract` / `python -m nla.jobs.label` read from YAML (+ key=value).

One dataclass per section; every field's comment says what it does. Ray resources are plain numbers here (jobs/
hands them to Ray Data).
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from nla.vllm_settings import VLLMSettings
from nla.extract_config import ExtractConfig
from nla.quality.settings import QualitySettings
from nla.settings import ModelsConfig, SamplingSettings

if TYPE_CHECKING:
    from nla.client import AVEngine


@dataclass
class StageResources:
    concurrency: int = 1  # actors in this stage's pool (one model copy each)
    num_cpus: float = 1.0  # CPUs reserved per actor (fractions let small stages share a core)
    num_gpus: float = 0.0  # GPUs per actor (1 = one GPU each; 0.5 = two actors share a GPU)
    batch_size: int = 32  # rows per call (documents for read/extract, activations for explain/score)
    threads: int = 0  # torch CPU threads per actor; 0 = Ray's default (num_cpus rounded, at least 1)
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per actor, e.g. {gpu_node: 1}
    # to pin a stage to the nodes that advertise them (`ray start --resources '{"gpu_node": 8}'`)


@dataclass
class LabelModels(ModelsConfig):
    av_backend: Literal["hf", "vllm"] = "hf"  # the AV's engine: transformers, or vLLM on prompt embeddings
    fast: bool = False  # the fast GPU path (nla/fast/): FastExtractor, FastAR and, with av_backend hf, greedy
    # and sampled decoding by FastBackend (Llama/Qwen2/Mistral/Gemma-3); for device cuda (runs on a CPU, slowly)

    @property
    def av_engine(self) -> AVEngine:
        """The engine NLAClient runs the AV on: models.fast with the hf backend decodes with nla/fast/decode.py."""
        return "fast" if self.fast and self.av_backend == "hf" else self.av_backend


@dataclass
class ExtractSettings:
    positions_per_doc: int = 10  # sampled positions per document (the release: up to ~10)
    min_position: int = 50  # first eligible position (the release: 50); the toy config lowers it
    all_positions: bool = False  # every eligible position instead of a sample
    seed: int = 0  # position RNG seed (with doc_id)
    max_length: int = 1024  # tokens per document; longer documents are cut
    context_chars: int = 400  # characters of text prefix stored with each activation

    def config(self, *, layer: int, batch_size: int) -> ExtractConfig:
        """The extractor's config: these settings at block `layer`, `batch_size` documents a forward."""
        return ExtractConfig(layer=layer, batch_size=batch_size, **asdict(self))


@dataclass
class LabelConfig:
    input: str = ""  # folder or s3:// prefix of shards (*.parquet, *.jsonl, *.txt), a Delta table, or a saved HF
    # datasets folder
    input_format: Literal["auto", "parquet", "jsonl", "txt", "delta", "hf"] = "auto"  # auto: from the files found
    text_column: str = "text"  # column (parquet, delta, hf) or JSON key (jsonl) holding the document text
    id_column: str = ""  # column holding a document id; "" = a content hash of the text
    lake: str = ""  # lake root; "" = $NLA_LAKE, else ./lake
    on_changed: Literal["error", "relabel", "skip"] = "error"  # an input file committed before whose content has
    # changed since: error = refuse the run and name it; relabel = label the new content beside the old rows; skip
    ray_address: str = ""  # "" = $RAY_ADDRESS if set, else a local Ray
    verbose: bool = False  # show Ray's own progress blocks and start-up logs (by default one [commit] line a shard)
    fuse: bool = False  # extract+explain+score in one actor pool (the explainer's resources; --from-activations:
    # explain+score); for CPU-only machines and models that share one GPU: no hand-offs, no stages fighting over cores
    models: LabelModels = field(default_factory=LabelModels)
    extract: ExtractSettings = field(default_factory=ExtractSettings)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    read: StageResources = field(default_factory=lambda: StageResources(num_cpus=0.25, batch_size=64))
    extractor: StageResources = field(default_factory=StageResources)
    explainer: StageResources = field(default_factory=StageResources)
    scorer: StageResources = field(default_factory=StageResources)
    vllm: VLLMSettings = field(default_factory=VLLMSettings)  # engine settings when models.av_backend is vllm
    quality: QualitySettings = field(default_factory=QualitySettings)  # the quality flags' thresholds


def default_config() -> str:
    """The toy config every job starts from (jobs/configs/toy.yaml): in this checkout, else in the installed
    `nla.jobs` package."""
    local = Path("jobs/configs/toy.yaml")
    if local.is_file():
        return str(local)
    spec = importlib.util.find_spec("nla.jobs")
    if spec and spec.submodule_search_locations:
        return str(Path(list(spec.submodule_search_locations)[0]) / "configs" / "toy.yaml")
    return str(local)
