"""``genfast sample CHECKPOINT --n 64 --out grid.png``: a PNG grid of a model's samples."""
from __future__ import annotations

import warnings

from genfast import BACKENDS


def register(subparsers) -> None:
    """Adds the ``sample`` subcommand to the ``genfast`` parser."""
    parser = subparsers.add_parser(
        "sample", help="draw samples from a trained model into a PNG grid",
        description="Loads a checkpoint written by genfast train and writes a PNG grid of n "
                    "samples (reconstructions of test images for the autoencoder), values "
                    "scaled from [0, levels) to 0..255.")
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="checkpoint.pt, or the directory holding it")
    parser.add_argument("--n", type=int, default=64, help="number of samples (default: 64)")
    parser.add_argument("--out", default="grid.png", help="PNG file to write (grid.png)")
    parser.add_argument("--nrow", type=int, default=None,
                        help="images per grid row (default: ceil(sqrt(n)))")
    parser.add_argument("--scale", type=int, default=None,
                        help="upscale each image this many times (default: to >= 32 pixels)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="genfast backend (default: the one the model was trained with)")
    parser.add_argument("--method", choices=("cached", "naive"), default="cached",
                        help="autoregressive models: evaluate each layer only where a new pixel "
                             "changes it (cached, default) or re-run the whole network per "
                             "pixel (naive); both draw the same images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run, parser=parser)


def _test_images(checkpoint: dict, n: int):
    """The first n test images of the checkpoint's data, for models that reconstruct; None
    (with a warning) when the data cannot be loaded here."""
    from genfast.data import load_dataset

    try:
        data = load_dataset(checkpoint["data"], "test", binarize=checkpoint.get("binarize", False))
    except (ValueError, FileNotFoundError, ImportError, KeyError) as exc:
        warnings.warn(f"genfast sample: no test data for the model ({exc})")
        return None
    return data.__getitems__(list(range(min(n, len(data)))))[0]


def run(args) -> int:
    import torch

    from genfast.models.autoregressive import AutoregressiveModel
    from genfast.train.checkpoint import load_checkpoint, model_from_checkpoint
    from genfast.train.distributed import ProcessInfo, choose_device
    from genfast.train.grid import save_grid

    if args.n < 1:
        args.parser.error(f"--n must be at least 1, got {args.n}")
    for name in ("nrow", "scale"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            args.parser.error(f"--{name} must be at least 1")
    try:
        checkpoint = load_checkpoint(args.checkpoint)
        device = choose_device(args.device, ProcessInfo())
    except (ValueError, FileNotFoundError) as exc:
        args.parser.error(str(exc).removeprefix("genfast: "))
    overrides = {"backend": args.backend} if args.backend else {}
    model = model_from_checkpoint(checkpoint, **overrides).to(device).eval()
    data = _test_images(checkpoint, args.n)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    torch.manual_seed(args.seed)  # for models that draw from the global generator
    options = {}
    if isinstance(model, AutoregressiveModel):
        options = {"method": args.method, "progress": not args.no_progress}
    images = model.sample(args.n, data=None if data is None else data.to(device),
                          generator=generator, **options)
    width, height = save_grid(args.out, images, model.levels, args.nrow, args.scale)
    print(f"wrote {args.out}: {len(images)} images from {checkpoint['model']}, "
          f"{width}x{height} pixels")
    return 0
