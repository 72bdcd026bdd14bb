"""The AR (activation reconstructor): explanation text -> vector, as the release builds and stores it.

Blocks 0..K of the base, final norm and lm_head replaced by identity, `value_head = Linear(d, d, bias=False)`
initialised to the identity, read at the last real token (left or right padding). Stored as an HF causal-LM folder
with num_hidden_layers = K+1 plus `value_head.safetensors` and the sidecar. Scoring lives in metrics.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from nla import hf
from nla import prompt as P
from nla.checks import VALUE_HEAD_FILE
from nla.errors import NLACheckpointError



def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the last real token in each row, whatever side the padding is on."""
    T = attention_mask.shape[1]
    return T - 1 - attention_mask.flip(1).to(torch.long).argmax(dim=1)


class ARModel(torch.nn.Module):
    def __init__(self, lm: Any) -> None:
        super().__init__()
        self.lm = lm  # the truncated causal LM, kept whole so save_pretrained writes the release layout
        self.backbone = hf.decoder(lm)
        # The value head reads the raw output of block K: final norm and lm_head become identity. The originals are
        # kept aside (not as submodules) so save_pretrained writes the full release layout.
        self._norm_attr = hf.final_norm_attr(self.backbone)
        self._saved = {"norm": getattr(self.backbone, self._norm_attr), "lm_head": lm.lm_head}
        setattr(self.backbone, self._norm_attr, torch.nn.Identity())
        lm.lm_head = torch.nn.Identity()
        d = lm.config.get_text_config().hidden_size
        self.d_model = d
        self.value_head = torch.nn.Linear(d, d, bias=False)
        with torch.no_grad():
            self.value_head.weight.copy_(torch.eye(d))
        self.value_head.to(next(lm.parameters()).dtype)

    @classmethod
    def from_base(cls, base_dir: str | Path, layer: int, *, dtype: torch.dtype = torch.float32) -> ARModel:
        """AR init: blocks 0..K of the base, identity value head."""
        return cls(hf.load_causal_lm(base_dir, dtype=dtype, n_blocks=layer + 1))

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, dtype: torch.dtype = torch.float32,
                        device: str = "cpu") -> ARModel:
        folder = Path(folder)
        head = folder / VALUE_HEAD_FILE
        if not head.is_file():
            raise NLACheckpointError(f"{head}: missing. An AR folder ships its trained head beside config.json. "
                                     "Fix: download value_head.safetensors with the checkpoint (it is not derivable).")
        model = cls(hf.load_causal_lm(folder, dtype=dtype))
        try:
            state = load_file(str(head))
        except Exception as e:  # safetensors raises its own SafetensorError on truncated files
            raise NLACheckpointError(f"{head}: unreadable ({e}). Fix: download it again.") from e
        if "weight" not in state or tuple(state["weight"].shape) != (model.d_model, model.d_model):
            shapes = {k: tuple(v.shape) for k, v in state.items()}
            raise NLACheckpointError(f"{head}: expected key 'weight' of shape ({model.d_model}, {model.d_model}), "
                                     f"found {shapes}. Fix: this head belongs to another model.")
        model.value_head.load_state_dict({"weight": state["weight"].to(dtype)})
        return model.to(device).eval()

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        setattr(self.backbone, self._norm_attr, self._saved["norm"])
        self.lm.lm_head = self._saved["lm_head"]
        try:
            self.lm.save_pretrained(str(folder))
        finally:
            setattr(self.backbone, self._norm_attr, torch.nn.Identity())
            self.lm.lm_head = torch.nn.Identity()
        save_file({"weight": self.value_head.weight.detach().contiguous().cpu()}, str(folder / VALUE_HEAD_FILE))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, d) reconstruction read at each row's last real token."""
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        rows = torch.arange(h.shape[0], device=h.device)
        return self.value_head(h[rows, last_token_index(attention_mask).to(h.device)])

    def encode(self, tokenizer: Any, template: str, explanations: list[str]) -> dict[str, torch.Tensor]:
        """Tokenise AR inputs: template filled with each stripped explanation, WITH special tokens (BOS)."""
        texts = [P.ar_text(template, e) for e in explanations]
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer(texts, add_special_tokens=True, padding=True, return_tensors="pt")
