"""Is this folder a usable NLA checkpoint: its sidecar's role, its width against config.json, its tokenizer (once per
unchanged folder, nla/checked.py) and every safetensors header against its file's size, without loading weights or
importing torch. Jobs, the server and the CLI call check_checkpoint before anything loads, so a bad folder is one
clear error; NLAClient and NLACritic run the same checks on load. Not the pair's fit (nla/pair.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nla import checked, hf
from nla.errors import NLACheckpointError, NLAConfigError
from nla.meta import NLAMeta

VALUE_HEAD_FILE = "value_head.safetensors"  # the AR's linear head, beside the truncated LM (the release layout)


def check_role(meta: NLAMeta, role: str) -> None:
    if meta.kind != "nla_model" or meta.role != role:
        other = {"av": "NLAClient", "ar": "NLACritic"}
        raise NLAConfigError(f"{meta.source}: role is {meta.role!r} but this loader needs {role!r}. Fix: point "
                             f"{other[role]} at the {role.upper()} folder (the AV explains, the AR reconstructs).")


def check_meta(meta: NLAMeta, role: str, tokenizer: Any, model_config: Any) -> NLAMeta:
    check_role(meta, role)
    d = model_config.get_text_config().hidden_size
    if d != meta.d_model:
        raise NLAConfigError(f"{meta.source}: key 'd_model' is {meta.d_model} but the model's hidden size is {d}. "
                             "Fix: the sidecar belongs to another model; use the one shipped with these weights.")
    meta.validate(tokenizer)
    return meta


def check_weights(folder: str | Path) -> None:
    """Every *.safetensors file in the folder must have a readable header whose tensors fit the file. A truncated
    download fails here in milliseconds, not later inside a model load on a worker."""
    from safetensors import safe_open

    for f in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="numpy"):
                pass
        except Exception as e:  # safetensors' SafetensorError derives from Exception only
            raise NLACheckpointError(f"{f}: unreadable ({type(e).__name__}: {str(e)[:200]}). Fix: the file is "
                                     "truncated or corrupt; download the checkpoint again.") from e


def check_checkpoint(checkpoint_dir: str | Path, role: str) -> NLAMeta:
    """What NLAClient / NLACritic check on load, without loading weights: the sidecar against the folder's own
    tokenizer and config.json, and every safetensors header against its file's size. Jobs and the server call it
    before starting Ray, so a bad folder is one clear error instead of a failed worker. A folder that passed the
    tokenizer check unchanged before skips it (nla.checked): the weights' headers are read every time."""
    folder = hf.check_folder(checkpoint_dir)
    meta = NLAMeta.load(folder)
    check_role(meta, role)  # before the tokenizer loads: the AR given as the AV is refused at once
    key = checked.stamp(folder, role)
    if not checked.passed(key):  # this exact folder has not passed this exact check before (nla/checked.py)
        check_meta(meta, role, hf.load_tokenizer(folder), hf.load_config(folder))
        checked.remember(key)
    if role == "ar" and not (folder / VALUE_HEAD_FILE).is_file():
        raise NLACheckpointError(f"{folder / VALUE_HEAD_FILE}: missing. Fix: download value_head.safetensors with "
                                 "the AR checkpoint (it is not derivable).")
    check_weights(folder)
    return meta
