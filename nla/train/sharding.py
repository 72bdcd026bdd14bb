"""FSDP2 for the training loops: shard an AV or AR over the ranks, and read or restore its state sharded or not.

`shard` applies `fully_shard` to every decoder block, then to the root (embeddings, final norm, lm_head, the AR's
value head), over a 1-D mesh of all ranks. The state helpers are COLLECTIVE under FSDP: every rank must call them
(the full state dict is gathered to rank 0, on CPU; the other ranks get {}). Unsharded (one process, or DDP) they
are the plain state_dict calls. Starting process groups is Ray Train's (or torchrun's) business, not this module's.
torch.distributed is imported inside the functions: its checkpoint API alone adds seconds to every `nla` start.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from nla import hf
from nla.ar import ARModel


def _options(*, gather: bool) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # gather: whole tensors to rank 0's CPU; restore: every rank holds the whole dict (a resumed checkpoint)
    return StateDictOptions(full_state_dict=True, cpu_offload=gather)


def shard(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """fully_shard each decoder block, then the root, over all ranks of the default process group. In place."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(torch.device(device).type, (dist.get_world_size(),))
    for block in hf.decoder(model.lm if isinstance(model, ARModel) else model).layers:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def is_sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def model_state(model: torch.nn.Module) -> dict[str, Any]:
    """The whole state dict (keys as module.state_dict()). FSDP: collective; {} on ranks other than 0."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(gather=True))


def optimizer_state(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimiser's whole state (FSDP: keyed by parameter name, collective, {} off rank 0)."""
    if not is_sharded(model):
        return opt.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, opt, options=_options(gather=True))


def load_optimizer_state(model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Restore what optimizer_state returned (every rank passes the same whole dict)."""
    if not is_sharded(model):
        opt.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, opt, state, options=_options(gather=False))


def whole(model: torch.nn.Module, fresh: Callable[[], torch.nn.Module]) -> torch.nn.Module | None:
    """The model to write in the release layout: itself when unsharded. FSDP (collective): on rank 0 an unsharded
    copy, `fresh()` (built only there), holding the gathered weights; None on the other ranks."""
    if not is_sharded(model):
        return model
    state = model_state(model)
    if not state:
        return None
    copy = fresh()
    copy.load_state_dict(state)
    return copy


@contextlib.contextmanager
def gathered(model: Any) -> Iterator[None]:
    """FSDP: the root's own parameters (the input embedding among them) are whole inside, for a lookup outside the
    forward (the prompt embeddings HF generate starts from). Collective. A no-op for an unsharded model."""
    if not is_sharded(model):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()
