"""Benchmark cases for sampling the autoregressive models: cached against naive.

Unlike the op cases (genfast.benchmark.cases), the unit of work here is a whole sampling run:
``model.sample(batch, method=...)`` for a batch of images. The naive method re-runs the
network once per pixel and colour (784 forward passes for a 28x28 grey image), so it is timed
once, or estimated from a few of those passes (each costs the same); the cached one is timed
``repeats`` times after a warm-up and reported by its median. Both draw with the same seed, and
the result records whether their integers are identical (at the small image size when the
naive time is estimated). The models have their random initial weights: the work per pixel does
not depend on training.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from genfast.benchmark.report import text_table

NAME_PREFIX = "sample_"


@dataclass(frozen=True, eq=False)
class SamplingCase:
    """``model`` (a genfast.models registry name) built with ``hparams`` on images of
    ``image_shape`` with ``levels`` values, sampling ``batch`` images. ``quick_side`` is the
    image side of ``genfast bench --quick``; ``min_speedup`` the promised cached/naive ratio
    at the full size (None: no promise)."""

    name: str
    model: str
    hparams: Mapping[str, Any] = field(default_factory=dict)
    image_shape: tuple[int, int, int] = (1, 28, 28)
    levels: int = 256
    batch: int = 16
    quick_side: int = 8
    min_speedup: float | None = None
    description: str = ""

    def shape(self, quick: bool) -> tuple[int, int, int]:
        c = self.image_shape[0]
        return (c, self.quick_side, self.quick_side) if quick else self.image_shape

    def label(self, quick: bool) -> str:
        c, h, w = self.shape(quick)
        return f"{self.batch}x{c}x{h}x{w}, {self.levels} levels"


CASES = (
    # Five masked layers of at least 64 channels each: the 7x7 mask A (1 -> 128) and the
    # residual blocks' 3x3 mask B (64 -> 64, inside a 128-channel residual stream).
    SamplingCase("sample_pixelcnn", "pixelcnn", {"channels": 128}, min_speedup=100.0,
                 description="PixelCNN, 7x7 mask A + 4 residual blocks with 3x3 mask B 64->64 "
                             "(5 masked layers), 128-channel residual stream"),
    SamplingCase("sample_gated_pixelcnn", "gated_pixelcnn",
                 description="Gated PixelCNN, 5 gated layers of 32 channels"),
    SamplingCase("sample_pixelrnn_row", "pixelrnn", {"layer": "row"}, min_speedup=20.0,
                 description="PixelRNN, 7x7 mask A + 2 Row LSTM layers of 32 hidden units"),
    SamplingCase("sample_pixelrnn_diagonal", "pixelrnn", {"layer": "diagonal"},
                 description="PixelRNN, 7x7 mask A + 2 Diagonal BiLSTM layers of 32 hidden "
                             "units"),
    SamplingCase("sample_pixelcnn_pp", "pixelcnn_pp", {"filters": 64}, min_speedup=50.0,
                 description="PixelCNN++, 64 filters, 1 gated ResNet block per resolution and "
                             "pass (11 per stream), 5 logistic mixtures"),
)


def case_names() -> list[str]:
    return [case.name for case in CASES]


def get_cases(names: list[str]) -> list[SamplingCase]:
    by_name = {case.name: case for case in CASES}
    return [by_name[name] for name in dict.fromkeys(names)]


# Naive steps timed to estimate a whole naive run, after one untimed step.
NAIVE_STEPS_TIMED = 8


@dataclass
class SamplingResult:
    case: SamplingCase
    quick: bool
    device: str
    naive_s: float
    cached_s: list[float]
    identical: bool
    naive_estimated: bool = False  # naive_s from NAIVE_STEPS_TIMED steps; identical at 8x8

    @property
    def cached_median_s(self) -> float:
        return statistics.median(self.cached_s)

    @property
    def speedup(self) -> float:
        return self.naive_s / self.cached_median_s

    @property
    def status(self) -> str:
        """'pass' / 'fail' against the case's promise; 'quick' when run small; '' if none."""
        if self.case.min_speedup is None:
            return ""
        if self.quick:
            return "quick"
        ok = self.identical and self.speedup >= self.case.min_speedup
        return "pass" if ok else "fail"

    @property
    def identical_label(self) -> str:
        """The size the identical check ran at."""
        return self.case.label(self.quick or self.naive_estimated)

    def to_dict(self) -> dict:
        return {"op": self.case.name, "model": self.case.model,
                "hparams": dict(self.case.hparams), "size_label": self.case.label(self.quick),
                "device": self.device, "naive_s": self.naive_s,
                "naive_estimated": self.naive_estimated, "cached_s": self.cached_s,
                "cached_median_s": self.cached_median_s, "speedup": self.speedup,
                "identical": self.identical, "identical_size_label": self.identical_label,
                "min_speedup": self.case.min_speedup, "status": self.status}


def _timed_sample(model, case: SamplingCase, method: str, device: str):
    generator = torch.Generator(device=device).manual_seed(1)
    start = time.perf_counter()
    images = model.sample(case.batch, generator=generator, method=method)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, images


def case_model(case: SamplingCase, device: str, quick: bool = False):
    """The case's model with its seeded random initial weights, on ``device``, in eval mode."""
    from genfast.models import build_model

    torch.manual_seed(0)
    return build_model(case.model, image_shape=case.shape(quick), levels=case.levels,
                       **case.hparams).to(device).eval()


def estimate_naive_s(model, batch: int, device: str, steps: int = NAIVE_STEPS_TIMED) -> float:
    """Seconds of a whole naive sampling run of ``batch`` images: the median of ``steps`` timed
    steps (after one untimed) times C x H x W. Each step runs the whole network on the whole
    image, so every step costs the same, and the median passes over bursts of other work."""
    from genfast.models.sampling import NaiveStepper

    if hasattr(model, "naive_stepper"):  # draws a whole pixel per step (PixelCNN++)
        return _estimate_naive_pixel_s(model, batch, device, steps)
    c, h, w = model.image_shape
    times = []
    with torch.inference_mode():
        stepper = NaiveStepper(model, batch, model.default_labels(batch, device))
        uniform = torch.rand(batch, dtype=torch.float64, device=device)
        stepper.start_row(0)
        for step in range(steps + 1):
            start = time.perf_counter()
            j = step % w
            stepper.set_value(0, j, 0, stepper.draw(0, j, 0, uniform))
            if device == "cuda":
                torch.cuda.synchronize()
            if step > 0:  # the first step warms up
                times.append(time.perf_counter() - start)
    return statistics.median(times) * c * h * w


def _estimate_naive_pixel_s(model, batch: int, device: str, steps: int) -> float:
    """estimate_naive_s for a model that draws all colours of a pixel per step: H x W steps,
    each the whole network on the whole image and one draw (model.draw_pixel); the median of
    ``steps`` timed steps after one untimed."""
    c, h, w = model.image_shape
    times = []
    with torch.inference_mode():
        stepper = model.naive_stepper(batch)
        uniform = torch.rand(batch, 1 + c, dtype=torch.float64, device=device)
        for step in range(steps + 1):
            start = time.perf_counter()
            j = step % w
            stepper.set_pixel(0, j, model.draw_pixel(stepper.params(0, j), uniform))
            if device == "cuda":
                torch.cuda.synchronize()
            if step > 0:  # the first step warms up
                times.append(time.perf_counter() - start)
    return statistics.median(times) * h * w


def run_sampling_case(case: SamplingCase, device: str, quick: bool = False,
                      repeats: int = 3, estimate_naive: bool = False) -> SamplingResult:
    """Times naive and cached sampling; with ``estimate_naive`` the naive time comes from
    estimate_naive_s, and the two methods are compared at the small (quick) size."""
    model = case_model(case, device, quick)
    estimated = estimate_naive and not quick  # a quick run's naive pass is short: timed whole
    if estimated:
        naive_s = estimate_naive_s(model, case.batch, device)
        small = case_model(case, device, quick=True)
        identical = torch.equal(_timed_sample(small, case, "naive", device)[1],
                                _timed_sample(small, case, "cached", device)[1])
        _timed_sample(model, case, "cached", device)  # warm-up
    else:
        naive_s, naive = _timed_sample(model, case, "naive", device)
        _, cached = _timed_sample(model, case, "cached", device)  # warm-up, and the comparison
        identical = torch.equal(naive, cached)
    times = [_timed_sample(model, case, "cached", device)[0] for _ in range(max(1, repeats))]
    return SamplingResult(case, quick, device, naive_s, times, identical,
                          naive_estimated=estimated)


def format_sampling_table(results: list[SamplingResult]) -> str:
    header = ("sampling", "size", "naive", "cached (median)", "cached vs naive", "identical",
              "target")
    rows = []
    for r in results:
        want = f">= {r.case.min_speedup:g}x: {r.status}" if r.case.min_speedup else ""
        naive = f"~{r.naive_s:.3g} s (est.)" if r.naive_estimated else f"{r.naive_s:.3g} s"
        identical = "yes" if r.identical else "NO"
        if r.naive_estimated:
            identical += f" (at {r.identical_label})"
        rows.append((r.case.name, r.case.label(r.quick), naive, f"{r.cached_median_s:.3g} s",
                     f"{r.speedup:.1f}x", identical, want))
    out = text_table(header, rows)
    out += ["", "Whole sampling runs (one batch of images); naive re-runs the network per pixel "
                "and colour, cached evaluates each layer at the new pixel only. identical: the "
                "same integers for the same seed."]
    if any(r.naive_estimated for r in results):
        out.append(f"est.: the naive run's time from the median of {NAIVE_STEPS_TIMED} of its "
                   "steps (each runs the whole network); genfast bench --full times whole naive "
                   "runs.")
    if any(r.quick for r in results):
        out.append("Quick run: small images; the targets apply to the full size only.")
    return "\n".join(out)
