"""One process per GPU under torchrun: DDP (default) or FSDP2 `fully_shard`.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR / MASTER_PORT); without them the
run is a single process and nothing here talks to a process group. NCCL on CUDA, gloo on CPU.
Rank 0 logs and writes checkpoints; every rank computes.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Read torchrun's environment; start the process group when there is more than one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    if info.world_size == 1:
        return model
    # every expert receives a (possibly zero) gradient each step, so no find_unused_parameters
    return DistributedDataParallel(model, device_ids=[info.local_rank] if info.device.type == "cuda" else None,
                                   broadcast_buffers=False)


def shard_fsdp(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """FSDP2: one unit per block's attention, modulation and dense FFN, then the root for the rest.

    Parameters become DTensors (build the optimizer and EMA after this). A unit's parameters are
    gathered only inside that module's forward, and the MoE routers run before the blocks (in
    VampDiT._route) while expert weights are read by the dispatch functions, so the MoE layers stay
    in the root unit: gathered once per forward, still sharded in optimizer, gradients and storage.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(info.device.type, (info.world_size,))
    for block in model.blocks:
        fully_shard(block.attn, mesh=mesh)
        fully_shard(block.adaLN_modulation, mesh=mesh)
        if block.kind == "dense":
            fully_shard(block.ffn, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor gathered to a plain CPU tensor (a collective: call on all ranks); other tensors to CPU."""
    return t.full_tensor().cpu() if hasattr(t, "full_tensor") else t.detach().cpu()


def gradient_sync(model: torch.nn.Module, sync: bool):
    """Context for one micro-step: no all-reduce on the non-final micro-steps of an accumulation."""
    if sync:
        return contextlib.nullcontext()
    if isinstance(model, DistributedDataParallel):
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # an FSDP2 module
        return _fsdp_no_sync(model)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def gather_objects(obj) -> list:
    """Every rank's `obj`, in rank order (a one-element list in a single process)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


# ----------------------------------------------------------------------------
# Whole states from sharded ones (checkpoints and exports under FSDP2)
# ----------------------------------------------------------------------------

def full_states(model: torch.nn.Module, ema, sharded: bool, is_main: bool) -> tuple[dict, dict, dict]:
    """(live weights, EMA export, EMA state) as full CPU tensors on rank 0; other ranks get empty dicts.
    Under FSDP2 the gathering is a collective: call it on every rank."""
    if not sharded:
        if not is_main:
            return {}, {}, {}
        live = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        ema_state = ema.state_dict()
        return live, {**live, **{n: t.to(live[n].dtype) for n, t in ema_state["shadow"].items()}}, ema_state
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    live = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    shadow = {n: full_tensor(t) for n, t in ema.shadow.items()}
    if not is_main:
        return {}, {}, {}
    ema_state = {**ema.state_dict(), "shadow": shadow}
    return live, {**live, **{n: t.to(live[n].dtype) for n, t in shadow.items()}}, ema_state


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, sharded: bool) -> dict:
    """The optimizer's whole state (gathered from the shards under FSDP2: a collective)."""
    if not sharded:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_and_ema(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema, state: dict,
                           sharded: bool, device: torch.device) -> None:
    """Restore a checkpoint's whole optimizer and EMA states (into this rank's shards under FSDP2)."""
    if not sharded:
        optimizer.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    from torch.distributed.tensor import distribute_tensor
    set_optimizer_state_dict(model, optimizer, state["optimizer"], options=StateDictOptions(full_state_dict=True))
    shadow = {n: distribute_tensor(t.to(device), ema.shadow[n].device_mesh, ema.shadow[n].placements)
              for n, t in state["ema"]["shadow"].items() if n in ema.shadow}
    ema.load_state_dict({**state["ema"], "shadow": shadow})
