"""What extraction takes from each document, without torch: the settings (ExtractConfig), the id of a document that
comes without one, and the position RNG keyed by (seed, doc_id). The driver, the reader and the server's planners
import this to name rows; nla/extract.py runs the model. Not the extraction itself (no model, no tokenizer here).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass
class ExtractConfig:
    layer: int  # K: read the output of block K
    positions_per_doc: int = 10  # sampled positions per document (the release: up to ~10)
    min_position: int = 50  # first eligible position (the release skips the first 50 tokens)
    all_positions: bool = False  # every non-special position >= min_position instead of a sample
    seed: int = 0  # with doc_id, keys the position RNG
    max_length: int = 1024  # tokens per document; longer documents are cut
    context_chars: int = 400  # characters of detokenised prefix kept with each row
    batch_size: int = 8  # documents per forward


def doc_id_for(text: str) -> str:
    """A stable content hash for documents that come without an id."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def position_rng(seed: int, doc_id: str) -> np.random.Generator:
    digest = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))
