"""Sampling throughput by batch size: images per second of cached and naive sampling.

For each autoregressive model (default hyperparameters, what ``genfast train`` builds; random
initial weights, as the work per pixel does not depend on training) and each batch size, on
1x28x28 images of 256 levels:

* **cached**: ``model.cached_stepper`` driven by ``draw_images``, as ``model.sample`` runs it,
  each row timed. A large batch of 784 pixels takes long on 2 cores, so the first rows are
  timed, up to a time budget (every row where it allows), and the whole image extrapolated
  from their median: each row of a cached stepper costs the same (the same layers on one
  pixel, 28 times, plus the same once-per-row work).
* **naive**: a few full forward passes are timed and their median multiplied by C x H x W, the
  passes a naive sample needs (each runs the whole network on the whole image, so each costs
  the same).

Cached and naive sampling are also run whole on a small image at every batch size and their
integers compared (they must be identical; tests/test_sampling_throughput.py checks it too).

The anchor is Fast PixelCNN++ (Ramachandran et al. 2017, "Fast Generation for Convolutional
Autoregressive Models"), whose cached generation's speed-up over naive generation grows with
the batch size: about 2x at batch 1, 183x at batch 256.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from genfast.benchmark.report import SAMPLE_MODE, text_table
from genfast.benchmark.sampling import estimate_naive_s

NAME = "sampling_throughput"
PNG_NAME = "sampling_throughput.png"
BATCHES = (1, 4, 16, 64, 256)
IMAGE_SHAPE, LEVELS = (1, 28, 28), 256
QUICK_SIDE = 8   # image side of genfast bench --quick
CHECK_SIDE = 6   # image side where cached and naive run whole and are compared
ROW_BUDGET_S = 3.0  # cached rows are timed until about this long, then extrapolated
NAIVE_PASSES = 3    # timed full passes per naive estimate, after one untimed
# Fast PixelCNN++'s reported speed-ups of cached over naive generation, by batch size.
FAST_PIXELCNN_PP = {1: 2.0, 256: 183.0}


@dataclass(frozen=True)
class ThroughputModel:
    """A model of the sweep: ``name`` for people, ``model`` the registry name."""

    name: str
    model: str
    hparams: Mapping[str, Any] = field(default_factory=dict)

    def build(self, image_shape: tuple[int, int, int], device, seed: int = 0):
        from genfast.models import build_model

        torch.manual_seed(seed)
        return build_model(self.model, image_shape=image_shape, levels=LEVELS,
                           **self.hparams).to(device).eval()


MODELS = (
    ThroughputModel("pixelcnn", "pixelcnn"),
    ThroughputModel("gated_pixelcnn", "gated_pixelcnn"),
    ThroughputModel("pixelrnn_row", "pixelrnn", {"layer": "row"}),
    ThroughputModel("pixelrnn_diagonal", "pixelrnn", {"layer": "diagonal"}),
)


@dataclass
class ThroughputPoint:
    """One model at one batch size. Times are of one whole sampling run of ``batch`` images."""

    model: str
    batch: int
    image_shape: tuple[int, int, int]
    device: str
    cached_s: float      # extrapolated from rows_timed rows when fewer than the image's
    rows_timed: int
    naive_s: float       # estimated from naive_passes full passes
    naive_passes: int
    identical: bool      # cached == naive, whole runs at check_shape
    check_shape: tuple[int, int, int]

    @property
    def extrapolated(self) -> bool:
        return self.rows_timed < self.image_shape[1]

    @property
    def cached_images_per_s(self) -> float:
        return self.batch / self.cached_s

    @property
    def naive_images_per_s(self) -> float:
        return self.batch / self.naive_s

    @property
    def speedup(self) -> float:
        return self.naive_s / self.cached_s

    def to_dict(self) -> dict:
        return {"model": self.model, "batch": self.batch, "image_shape": list(self.image_shape),
                "levels": LEVELS, "device": self.device, "cached_s": self.cached_s,
                "cached_rows_timed": self.rows_timed, "cached_extrapolated": self.extrapolated,
                "cached_images_per_s": self.cached_images_per_s, "naive_s": self.naive_s,
                "naive_passes_timed": self.naive_passes,
                "naive_images_per_s": self.naive_images_per_s, "speedup": self.speedup,
                "identical": self.identical, "identical_shape": list(self.check_shape)}


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_cached_rows(model, batch: int, device, rows: int) -> tuple[float, list[float]]:
    """(seconds to build a cached stepper for ``batch`` images, seconds of each of their first
    ``rows`` rows), drawn the way model.sample draws them."""
    from genfast.models.sampling import draw_images

    c, _, w = model.image_shape
    generator = torch.Generator(device=device).manual_seed(1)
    marks = []

    def on_row(i):
        _sync(device)
        marks.append(time.perf_counter())

    with torch.inference_mode():
        start = time.perf_counter()
        stepper = model.cached_stepper(batch, model.default_labels(batch, device))
        _sync(device)
        marks.append(time.perf_counter())
        draw_images(stepper, batch, (c, rows, w), generator, device, False, "", on_row)
    return marks[0] - start, [b - a for a, b in zip(marks, marks[1:])]


def cached_run_s(model, batch: int, device, budget_s: float = ROW_BUDGET_S) -> tuple[float, int]:
    """(seconds of a whole cached sampling run, rows timed): after a warm-up row, every row if
    they fit the budget, else as many as do (at least 3); the stepper's setup plus the median
    row times the image's rows (the median passes over bursts of other work)."""
    height = model.image_shape[1]
    _, (one_row,) = time_cached_rows(model, batch, device, 1)
    rows = height if one_row * height <= budget_s else max(3, min(height,
                                                                  int(budget_s / one_row)))
    setup, row_times = time_cached_rows(model, batch, device, rows)
    return setup + statistics.median(row_times) * height, rows


def samples_identical(spec: ThroughputModel, batch: int, device, side: int = CHECK_SIDE) -> bool:
    """Whether cached and naive sampling draw the same integers for ``batch`` images of
    side x side (whole runs, the same seed)."""
    model = spec.build((IMAGE_SHAPE[0], side, side), device)
    naive, cached = (model.sample(batch, method=method,
                                  generator=torch.Generator(device=device).manual_seed(3))
                     for method in ("naive", "cached"))
    return torch.equal(naive, cached)


def run_throughput(device: str, quick: bool = False, batches=None, models=None,
                   budget_s: float = ROW_BUDGET_S, naive_passes: int = NAIVE_PASSES,
                   check_side: int = CHECK_SIDE,
                   on_point: Callable[[ThroughputPoint], None] | None = None
                   ) -> list[ThroughputPoint]:
    """Every model (default MODELS) at every batch size (default BATCHES); quick runs use
    QUICK_SIDE x QUICK_SIDE images."""
    batches = BATCHES if batches is None else batches
    models = MODELS if models is None else models
    c = IMAGE_SHAPE[0]
    shape = (c, QUICK_SIDE, QUICK_SIDE) if quick else IMAGE_SHAPE
    points = []
    for spec in models:
        model = spec.build(shape, device)
        for batch in batches:
            cached_s, rows = cached_run_s(model, batch, device, budget_s)
            naive_s = estimate_naive_s(model, batch, str(device), steps=naive_passes)
            identical = samples_identical(spec, batch, device, check_side)
            point = ThroughputPoint(spec.name, batch, shape, str(device), cached_s, rows,
                                    naive_s, naive_passes, identical,
                                    (c, check_side, check_side))
            points.append(point)
            if on_point is not None:
                on_point(point)
    return points


def format_line(p: ThroughputPoint) -> str:
    return (f"{NAME} {p.model} batch {p.batch}: cached {p.cached_images_per_s:.3g} images/s, "
            f"naive ~{p.naive_images_per_s:.3g} images/s (est.), {p.speedup:.1f}x, identical "
            f"{'yes' if p.identical else 'NO'}")


def format_table(points: list[ThroughputPoint]) -> str:
    header = ("model", "batch", "cached images/s", "naive images/s (est.)", "cached vs naive",
              "cached rows timed", "identical")
    rows = []
    for p in points:
        check = "x".join(map(str, p.check_shape))
        rows.append((p.model, p.batch, f"{p.cached_images_per_s:.3g}",
                     f"{p.naive_images_per_s:.3g}", f"{p.speedup:.1f}x",
                     f"{p.rows_timed}/{p.image_shape[1]}",
                     f"{'yes' if p.identical else 'NO'} (at {check})"))
    out = text_table(header, rows, right={1, 2, 3, 4})
    if points:
        c, h, w = points[0].image_shape
        out += ["", f"Sampling {c}x{h}x{w} images of {LEVELS} levels. cached: the stepper's "
                    f"setup + the median of the rows timed (after one warm-up row) x {h}; "
                    f"naive: the median of {points[0].naive_passes} timed full forward passes "
                    f"x {c * h * w} (one per pixel and colour). identical: cached and naive "
                    "whole runs draw the same integers for the same seed at the size given.",
                f"Fast PixelCNN++ (Ramachandran et al. 2017) reports cached over naive growing "
                f"from about {FAST_PIXELCNN_PP[1]:g}x at batch 1 to "
                f"{FAST_PIXELCNN_PP[256]:g}x at batch 256."]
    return "\n".join(out)


def csv_rows(points: list[ThroughputPoint], common: dict) -> list[dict]:
    """Two bench.csv rows per point (cached and naive), one whole sampling run each."""
    rows = []
    for p in points:
        c, h, w = p.image_shape
        cached = "cached (extrapolated)" if p.extrapolated else "cached"
        for provider, seconds in ((cached, p.cached_s), ("naive (estimated)", p.naive_s)):
            rows.append({**common, "op": f"throughput_{p.model}", "size": f"batch{p.batch}",
                         "size_label": f"{p.batch}x{c}x{h}x{w}, {LEVELS} levels",
                         "mode": SAMPLE_MODE, "dtype": "float32", "provider": provider,
                         "p20_s": seconds, "p50_s": seconds, "p80_s": seconds, "blocks": 1,
                         "calls_per_block": 1})
    return rows


def write_chart(points: list[ThroughputPoint], path: str, title: str) -> None:
    """Images per second against batch size (cached solid, naive dashed) and the speed-up,
    with Fast PixelCNN++'s reported speed-ups beside ours. Agg canvas, never a window."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    rate, gain = fig.subplots(1, 2)
    for k, model in enumerate(dict.fromkeys(p.model for p in points)):
        mine = [p for p in points if p.model == model]
        batches = [p.batch for p in mine]
        colour = f"C{k}"
        rate.plot(batches, [p.cached_images_per_s for p in mine], "o-", color=colour,
                  label=f"{model} cached")
        rate.plot(batches, [p.naive_images_per_s for p in mine], "s--", color=colour,
                  alpha=0.7, label=f"{model} naive (est.)")
        gain.plot(batches, [p.speedup for p in mine], "o-", color=colour, label=model)
    gain.plot(list(FAST_PIXELCNN_PP), list(FAST_PIXELCNN_PP.values()), "kX", markersize=9,
              label="Fast PixelCNN++ (Ramachandran et al. 2017)")
    batches = sorted({p.batch for p in points} | set(FAST_PIXELCNN_PP))
    for ax in (rate, gain):
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.grid(True, which="both", alpha=0.3)
    rate.set_ylabel("images per second")
    rate.set_title("sampling throughput")
    rate.legend(fontsize=7)
    gain.set_ylabel("cached / naive")
    gain.set_title("speed-up of cached over naive sampling")
    gain.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120)
