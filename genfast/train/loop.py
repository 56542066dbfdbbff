"""The model-agnostic training loop behind ``genfast train`` (one process or torchrun DDP).

Per batch, for each stage of ``model.stages`` in order: zero the stage's Adam optimiser,
loss = model(images, labels, stage=stage), backward, step. The logged loss of a stage is its
mean per image over the epoch, summed over all processes before dividing, so one process and
N processes log the same quantity. A checkpoint is written after every epoch; ``resume``
continues from it exactly: the data order and the model's own random draws are seeded from
(seed, epoch, rank), so a resumed run repeats what the uninterrupted run would have done.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch
from torch.utils.data import DataLoader, DistributedSampler

from genfast.data import ImageDataset, load_dataset
from genfast.models import build_model
from genfast.train import distributed
from genfast.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from genfast.train.evaluate import evaluate

METRICS_NAME = "metrics.json"


@dataclass
class TrainOptions:
    """What ``genfast train`` was asked to do. ``batch_size`` is the global batch: each of N
    processes takes batch_size / N images per step."""

    model: str
    data: str = "digits"
    binarize: bool = False
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    device: str = "auto"
    out: str = "runs"
    resume: bool = False
    seed: int = 0
    backend: str | None = None
    hparams: dict = field(default_factory=dict)
    limit_batches: int | None = None
    eval_batch_size: int = 256
    progress: bool | None = None  # None: a progress bar only on a terminal


def _as_batch(batch):
    """collate_fn: ImageDataset.__getitems__ already returns (images, labels) tensors."""
    return batch


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 1009 + rank) % (2 ** 63)


def _check_options(options: TrainOptions, info: distributed.ProcessInfo) -> None:
    if options.epochs < 0:
        raise ValueError(f"genfast: --epochs must be >= 0, got {options.epochs}")
    if options.batch_size < 1 or options.batch_size % info.world_size:
        raise ValueError(f"genfast: --batch-size {options.batch_size} must be a positive "
                         f"multiple of the number of processes ({info.world_size})")
    if not options.lr >= 0 or math.isinf(options.lr):
        raise ValueError(f"genfast: --lr must be a finite number >= 0, got {options.lr}")
    if options.limit_batches is not None and options.limit_batches < 1:
        raise ValueError(f"genfast: --limit-batches must be >= 1, got {options.limit_batches}")


def _model_config(options: TrainOptions, data: ImageDataset, checkpoint: dict | None) -> dict:
    if checkpoint is not None:
        config = dict(checkpoint["config"])
        changed = {k: v for k, v in options.hparams.items() if config.get(k) != v}
        if changed:
            raise ValueError(f"genfast: --resume keeps the checkpoint's hyperparameters; "
                             f"{changed} differ from its config {config}")
    else:
        reserved = {"image_shape", "levels"} & set(options.hparams)
        if reserved:
            raise ValueError(f"genfast: {sorted(reserved)} come from the data; do not set them")
        config = {"image_shape": data.image_shape, "levels": data.levels, **options.hparams}
    if options.backend is not None:
        config["backend"] = options.backend
    classes = config.get("num_classes")
    if classes and (data.num_classes is None or data.num_classes > classes):
        found = "no labels" if data.num_classes is None else f"{data.num_classes} classes"
        raise ValueError(f"genfast: the model conditions on {classes} classes but {data.name} "
                         f"has {found}")
    return config


def _load_resume(options: TrainOptions) -> dict | None:
    if not options.resume:
        return None
    checkpoint = load_checkpoint(os.path.join(options.out, CHECKPOINT_NAME))
    trained = (checkpoint["model"], checkpoint.get("data"), checkpoint.get("binarize"))
    asked = (options.model, options.data, options.binarize)
    if trained != asked:
        raise ValueError(f"genfast: --resume: the checkpoint in {options.out} is model "
                         f"{trained[0]!r} on data {trained[1]!r} (binarize={trained[2]}), not "
                         f"{asked[0]!r} on {asked[1]!r} (binarize={asked[2]})")
    return checkpoint


def train(options: TrainOptions) -> dict:
    """Trains, checkpoints every epoch, evaluates on the test split.

    Returns {"history": [per-epoch records], "test": {metric: mean}, "checkpoint": path}.
    """
    info = distributed.launched_info()
    _check_options(options, info)
    device = distributed.choose_device(options.device, info)
    distributed.setup(info, device)
    try:
        return _train(options, info, device)
    finally:
        distributed.teardown(info)


def _train(options: TrainOptions, info: distributed.ProcessInfo, device: torch.device) -> dict:
    say = print if info.is_main else (lambda *a, **k: None)
    train_data = load_dataset(options.data, "train", binarize=options.binarize)
    test_data = load_dataset(options.data, "test", binarize=options.binarize)
    checkpoint = _load_resume(options)
    config = _model_config(options, train_data, checkpoint)
    path = os.path.join(options.out, CHECKPOINT_NAME)
    saved = checkpoint  # the checkpoint last written (or resumed from), which gets the metrics

    torch.manual_seed(options.seed)  # the same initial weights in every process
    model = build_model(options.model, **config).to(device)
    optimizers = {stage: torch.optim.Adam(model.stage_parameters(stage), lr=options.lr)
                  for stage in model.stages}
    start_epoch, history = 0, []
    if checkpoint is not None:
        model.load_state_dict(checkpoint["state_dict"])
        for stage, state in checkpoint["optimizers"].items():
            optimizers[stage].load_state_dict(state)
        start_epoch, history = checkpoint["epoch"], list(checkpoint.get("history", []))
        say(f"resuming {options.model} from epoch {start_epoch} ({options.out})")
    wrapped = model
    if info.distributed:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=len(model.stages) > 1)

    sampler = DistributedSampler(train_data, num_replicas=info.world_size, rank=info.rank,
                                 shuffle=True, seed=options.seed)
    loader = DataLoader(train_data, batch_size=options.batch_size // info.world_size,
                        sampler=sampler, collate_fn=_as_batch)
    parameters = sum(p.numel() for p in model.parameters())
    say(f"genfast train {options.model}: {parameters:,} parameters, data {train_data.name} "
        f"{train_data.image_shape} x{len(train_data)}, {info.world_size} process(es) on "
        f"{device}, backend {options.backend or 'default'}")

    for epoch in range(start_epoch, options.epochs):
        sampler.set_epoch(epoch)
        torch.manual_seed(_epoch_seed(options.seed, epoch, info.rank))
        record = _run_epoch(wrapped, model.stages, optimizers, loader, device, options, info,
                            epoch)
        history.append(record)
        losses = ", ".join(f"{k} {v:.4f}" for k, v in record["loss"].items())
        say(f"epoch {epoch + 1}/{options.epochs}: {losses} ({record['step_ms']:.1f} ms/step)",
            flush=True)
        if info.is_main:
            saved = {
                "model": options.model, "config": model.config,
                "state_dict": model.state_dict(),
                "optimizers": {s: o.state_dict() for s, o in optimizers.items()},
                "epoch": epoch + 1, "data": options.data, "binarize": options.binarize,
                "train": asdict(options), "history": history}
            save_checkpoint(path, saved)
        distributed.barrier(info)

    metrics = evaluate(model, test_data, options.eval_batch_size, device, info)
    for key, value in metrics.items():
        say(f"test {key}: {value:.4f}")
    if info.is_main:
        if saved is not None:
            save_checkpoint(path, {**saved, "metrics": metrics})
        with open(os.path.join(options.out, METRICS_NAME), "w") as f:
            json.dump({"model": options.model, "config": model.config, "data": options.data,
                       "binarize": options.binarize, "world_size": info.world_size,
                       "torch_threads": torch.get_num_threads(), "history": history,
                       "test": metrics}, f, indent=1, default=str)
    distributed.barrier(info)
    return {"history": history, "test": metrics, "checkpoint": path}


def _run_epoch(wrapped, stages, optimizers, loader, device, options, info, epoch) -> dict:
    """One pass over this process's shard; returns {"epoch", "loss": {stage: mean}, "step_ms",
    "step_cpu_ms", "images"}: losses averaged per image over all processes, the median wall
    and CPU (this process, all its threads) time of a step."""
    from tqdm import tqdm

    wrapped.train()
    totals = torch.zeros(len(stages) + 1, dtype=torch.float64)  # per-stage sums, then images
    steps = len(loader) if options.limit_batches is None else min(len(loader),
                                                                  options.limit_batches)
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{options.epochs}", unit="step",
               leave=False, disable=(not info.is_main) or
               (None if options.progress is None else not options.progress))
    step_seconds, step_cpu_seconds = [], []
    for step, (images, labels) in enumerate(loader):
        if step >= steps:
            break
        started, started_cpu = time.perf_counter(), time.process_time()
        images = images.to(device)
        labels = labels.to(device) if loader.dataset.labels is not None else None
        batch = torch.zeros_like(totals)
        for i, stage in enumerate(stages):
            optimizers[stage].zero_grad(set_to_none=True)
            loss = wrapped(images, labels, stage=stage)
            loss.backward()
            optimizers[stage].step()
            batch[i] = float(loss.detach()) * len(images)
        batch[-1] = len(images)
        step_seconds.append(time.perf_counter() - started)
        # CPU time of this process: on a shared core it stays what the step costs.
        step_cpu_seconds.append(time.process_time() - started_cpu)
        totals += distributed.all_reduce_sum(batch, info)
        bar.update(1)
        bar.set_postfix({s: f"{totals[i] / totals[-1]:.4f}" for i, s in enumerate(stages)})
    bar.close()
    count = float(totals[-1]) or 1.0
    return {"epoch": epoch + 1,
            "loss": {s: float(totals[i]) / count for i, s in enumerate(stages)},
            "step_ms": _median_ms(step_seconds), "step_cpu_ms": _median_ms(step_cpu_seconds),
            "images": int(totals[-1])}


def _median_ms(seconds: list[float]) -> float:
    return 1000 * statistics.median(seconds) if seconds else float("nan")
