"""``genfast train MODEL --data NAME ...``: trains a registered model (torchrun-ready)."""
from __future__ import annotations

import ast
import os

from genfast import BACKENDS


def parse_param(text: str) -> tuple[str, object]:
    """"KEY=VALUE" -> (key, value); the value is a Python literal when it parses as one
    (64, 1e-3, None, True, (1, 2)), else the string itself ("diagonal")."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    return key.strip(), parsed


def _param(text: str):
    import argparse

    try:
        return parse_param(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers) -> None:
    """Adds the ``train`` subcommand to the ``genfast`` parser."""
    from genfast.models import MODELS

    parser = subparsers.add_parser(
        "train", help="train a generative model on a dataset",
        description="Trains MODEL with Adam, shows a progress bar with the running loss, writes "
                    "DIR/checkpoint.pt after every epoch and, at the end, evaluates on the test "
                    "split (NLL in nats per image and bits per dimension for likelihood models) "
                    "and writes DIR/metrics.json. Runs under torchrun --nproc_per_node=N "
                    "(DistributedDataParallel; gloo on CPU, nccl on GPUs).")
    parser.add_argument("model", metavar="MODEL",
                        help=f"model to train: {', '.join(sorted(MODELS))}")
    parser.add_argument("--data", default="digits", metavar="NAME",
                        help="digits (default), fashion-mnist, NAME-binarized, a .npz file or a "
                             "folder of PNG images")
    parser.add_argument("--binarize", action="store_true",
                        help="threshold the images at half their levels (binary data)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs (default: 10)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="global batch size, split over the processes (default: 64)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="device (default: cuda if available, else cpu)")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="genfast backend of the model's layers (default: genfast's choice; "
                             "'reference' is plain PyTorch, to compare speed)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="directory for checkpoint.pt and metrics.json (default: runs/MODEL)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from DIR/checkpoint.pt up to --epochs")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("-p", "--param", action="append", type=_param, default=[],
                        metavar="KEY=VALUE",
                        help="model hyperparameter (repeatable), e.g. -p layer=diagonal "
                             "-p hidden=32")
    parser.add_argument("--limit-batches", type=int, default=None, metavar="N",
                        help="at most N steps per epoch (quick runs and timing)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run, parser=parser)


def run(args) -> int:
    from genfast.models import MODELS
    from genfast.train.loop import TrainOptions, train

    if args.model not in MODELS:
        args.parser.error(f"unknown model {args.model!r}; choose from: "
                          f"{', '.join(sorted(MODELS))}")
    options = TrainOptions(
        model=args.model, data=args.data, binarize=args.binarize, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, device=args.device,
        out=args.out or os.path.join("runs", args.model), resume=args.resume, seed=args.seed,
        backend=args.backend, hparams=dict(args.param), limit_batches=args.limit_batches,
        progress=False if args.no_progress else None)
    try:
        train(options)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        # Bad data names, hyperparameters, image sizes: a message, not a traceback.
        args.parser.error(str(exc).removeprefix("genfast: "))
    return 0
