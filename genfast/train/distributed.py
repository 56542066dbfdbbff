"""One process or many under torchrun: who am I, and the few collective ops the loop needs.

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK. With WORLD_SIZE > 1 the process group uses gloo
on the CPU and nccl on CUDA; with one process nothing is initialised and every collective is
the identity, so the loop is written once.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_info() -> ProcessInfo:
    """Rank and world size from torchrun's environment (one process when it is absent)."""
    env = os.environ
    return ProcessInfo(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                       int(env.get("LOCAL_RANK", 0)))


def choose_device(requested: str, info: ProcessInfo) -> torch.device:
    """"auto" -> cuda if visible else cpu; under torchrun each process takes GPU LOCAL_RANK."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("genfast: --device cuda, but no CUDA device is visible to torch")
        return torch.device("cuda", info.local_rank % torch.cuda.device_count())
    if requested != "cpu":
        raise ValueError(f"genfast: unknown device {requested!r}; use cpu, cuda or auto")
    return torch.device("cpu")


def setup(info: ProcessInfo, device: torch.device) -> None:
    """Starts the process group when distributed (gloo on CPU, nccl on CUDA)."""
    if info.distributed and not dist.is_initialized():
        # torch._dynamo, imported later (DistributedDataParallel's constructor does), keeps
        # references to a process group that exists when it loads (torch 2.14). Such a group
        # outlives destroy_process_group, and its gloo threads run into interpreter exit, where
        # one of them aborted a worker ("terminate called without an active exception").
        # Loaded first, it holds none, and teardown joins the threads.
        import torch._dynamo  # noqa: F401
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def teardown(info: ProcessInfo) -> None:
    """Destroys the process group, which joins its threads (see setup)."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, info: ProcessInfo) -> torch.Tensor:
    """The sum of ``t`` over all processes (``t`` itself with one process)."""
    if not info.distributed:
        return t
    # nccl reduces CUDA tensors only.
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
        else t.device
    work = t.to(on, copy=True)
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(t.device)


def barrier(info: ProcessInfo) -> None:
    if info.distributed:
        dist.barrier()
