"""Identity of labeling work: a shard is its content, a row is the recipe that made it.

A shard's unit id is `name@fingerprint` (a streamed sha256 of its bytes: the fastest hash here, with the CPU's SHA
instructions), so two files of one name are two shards
and a file whose content changed is a new one. A recipe is every setting that changes what a table's rows hold:
for activations the base's content, the layer and the extraction settings; for explanations the AV's and AR's
content (their sidecars, hence prompts, included) and the sampling settings. A rerun skips a unit only when the same
content was committed under the same recipe. This module computes identities; it does not decide what to run
(plan.py does).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

CHUNK = 4 * 2**20  # fingerprints stream the file in pieces of this size: bounded memory on multi-GB shards
UNIT_FP_CHARS = 12  # fingerprint characters in a unit id: enough to tell files apart, short enough to read


def file_fingerprint(path: str, storage_options: dict[str, str] | None = None) -> tuple[str, int | None]:
    """(sha256 hex of the bytes, 32 characters, size) of a local file or an object on a store (reached with
    `storage_options`), streamed in CHUNK pieces: the same bytes have the same fingerprint wherever they live."""
    from nla.lake.storage import open_input

    h, size = hashlib.sha256(), 0
    with open_input(path, storage_options) as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest()[:32], size


def unit_id(name: str, fingerprint: str) -> str:
    return f"{name}@{fingerprint[:UNIT_FP_CHARS]}"


def name_of(unit: str) -> str:
    """The shard name inside a unit id (a migrated v1 unit is its name alone)."""
    return unit.rsplit("@", 1)[0] if "@" in unit else unit


@dataclass(frozen=True)
class Recipe:
    fields: dict[str, Any]

    @property
    def hash(self) -> str:
        return hashlib.blake2b(json.dumps(self.fields, sort_keys=True, default=str).encode(),
                               digest_size=8).hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"hash": self.hash, "fields": self.fields}


def activation_recipe(*, base_fingerprint: str, layer: int, extract: Any, dtype: str) -> Recipe:
    """What makes an activations row: the base's content, layer K, the weights' dtype and the extraction settings
    (positions policy and its seed, max length, context kept)."""
    return Recipe({"base": base_fingerprint, "layer": layer, "dtype": dtype, **asdict(extract)})


def explanation_recipe(*, av_fingerprint: str, ar_fingerprint: str, sampling: Any, dtype: str) -> Recipe:
    """What makes an explanations row: the AV's content (its sidecar, so its prompt, included), the AR's ('' when
    unscored), the weights' dtype and the sampling settings (temperature, top_p, samples, max_new_tokens, seed)."""
    return Recipe({"av": av_fingerprint, "ar": ar_fingerprint, "dtype": dtype, "sampling": asdict(sampling)})
