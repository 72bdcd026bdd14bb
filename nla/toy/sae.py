"""An SAE-style decoder for the toy kit, to try `nla import` on: a .safetensors file whose `W_dec` (latents x d)
holds unit-length directions of the kit's own layer-K activations on fresh toy documents (with `W_enc` = W_dec^T
and a zero `b_dec` beside it, as SAE files have). It is not a trained SAE: its rows are real directions of the
toy model's residual stream, so the toy AV can explain them. Not part of the kit's recipe (no cache key)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_toy_sae(out: str | Path, *, latents: int = 512, seed: int = 7) -> Path:
    from safetensors.numpy import save_file

    from nla.extract import Extractor
    from nla.extract_config import ExtractConfig
    from nla.meta import NLAMeta
    from nla.toy.kit import ensure_toy_kit
    from nla.toy.corpus import generate_corpus

    kit = ensure_toy_kit()
    layer = NLAMeta.load(kit / "av").layer
    extractor = Extractor.from_pretrained(kit / "base", ExtractConfig(layer=layer, positions_per_doc=6, min_position=8))
    rows: list[np.ndarray] = []
    docs = generate_corpus(latents // 4 + 8, seed)
    for start in range(0, len(docs), 32):
        part = docs[start:start + 32]
        rows.append(extractor([d.text for d in part], [d.doc_id for d in part])["vector"])
        if sum(len(r) for r in rows) >= latents:
            break
    w = np.concatenate(rows)[:latents].astype(np.float32)  # (latents, d)
    assert len(w) == latents, f"the toy documents gave {len(w)} activations, fewer than {latents}"
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"W_dec": w, "W_enc": np.ascontiguousarray(w.T), "b_dec": np.zeros(w.shape[1], np.float32)}, str(out))
    return out
