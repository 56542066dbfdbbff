"""What ``genfast bench`` prints and writes: the table, the JSON record and the speedup chart."""
from __future__ import annotations

import datetime
import json
import os
import platform
from dataclasses import dataclass

import torch

import genfast
from genfast._ext import cpu_amx_enabled
from genfast.benchmark.cases import OpCase, Target
from genfast.benchmark.runner import COMPILE, REFERENCE, Result

JSON_NAME, PNG_NAME = "bench.json", "bench.png"
SCHEMA_VERSION = 1


# ----------------------------------------------------------------------------- machine

def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict:
    """Where the numbers come from: device, versions, cores, threads and genfast's build."""
    info = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else _cpu_name(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        # other work on the machine skews CPU timings; this records how busy it was at start
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        # whether the cpu backend's float32 kernels may use AMX tiles (cpu/amx_split.h)
        "cpu_amx": cpu_amx_enabled(),
        "torch_version": torch.__version__,
        "torch_cuda_version": torch.version.cuda,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "genfast_version": genfast.__version__,
        "genfast_build_info": genfast.build_info(),
        "backends": {name: {"available": b.available, "reason": b.reason}
                     for name, b in genfast.backends().items()},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        import triton

        info["triton_version"] = triton.__version__
    except ImportError:
        info["triton_version"] = None
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info["cuda_capability"] = f"{props.major}.{props.minor}"
        info["cuda_memory_gib"] = round(props.total_memory / 2**30, 1)
    return info


# ----------------------------------------------------------------------------- targets

@dataclass(frozen=True)
class TargetCheck:
    case: OpCase
    target: Target
    status: str  # "pass", "fail", "incomplete" (part not measured) or "not run"
    detail: str

    def to_dict(self) -> dict:
        return {"op": self.case.name, "target": self.target.describe(self.case),
                "status": self.status, "detail": self.detail}


def check_targets(results: list[Result], device: str) -> list[TargetCheck]:
    """Each registered target of the cases that ran on ``device``, against the results."""
    by_key = {(r.case.name, r.size.name, r.mode): r for r in results}
    checks = []
    for case in dict.fromkeys(r.case for r in results):
        for target in case.targets:
            if target.device != device:
                continue
            result = by_key.get((case.name, target.size, target.mode))
            vs_ref = result.speedup(target.backend, REFERENCE) if result else None
            if vs_ref is None:
                why = (result.skipped.get(target.backend, "not measured") if result
                       else "size or mode not run")
                checks.append(TargetCheck(case, target, "not run", why))
                continue
            ok = vs_ref >= target.min_vs_reference
            detail = f"{vs_ref:.2f}x reference (want >= {target.min_vs_reference:g}x)"
            complete = True
            if target.beat_compile:
                vs_compile = result.speedup(target.backend, COMPILE)
                if vs_compile is None:
                    complete = False
                    detail += "; torch.compile not measured"
                else:
                    if target.min_vs_compile > 1.0:
                        ok = ok and vs_compile >= target.min_vs_compile
                        detail += (f", {vs_compile:.2f}x torch.compile "
                                   f"(want >= {target.min_vs_compile:g}x)")
                    else:
                        ok = ok and vs_compile > 1.0
                        detail += f", {vs_compile:.2f}x torch.compile (want > 1x)"
            status = "fail" if not ok else ("pass" if complete else "incomplete")
            checks.append(TargetCheck(case, target, status, detail))
    return checks


# ----------------------------------------------------------------------------- table

def _fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def text_table(header, rows, right=()) -> list[str]:
    """Lines of a plain-text table: the header, a rule, then the rows (None for a blank line),
    columns as wide as their widest cell, the columns numbered in ``right`` right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *(r for r in rows if r))]

    def line(cells):
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(header), line(["-" * w for w in widths])] + [line(r) if r else "" for r in rows]


def format_table(results: list[Result], checks: list[TargetCheck] = ()) -> str:
    """The results as a plain-text table, then skipped implementations and the targets."""
    header = ("op", "size", "mode", "implementation", "median", "iqr", "vs reference",
              "vs compile", "GB/s")
    rows = []
    for r in results:
        first = True
        for impl, m in r.measurements.items():
            gbps = r.gb_per_s(impl)
            rows.append((
                r.case.name if first else "", f"{r.size.name} {r.size.label}" if first else "",
                r.mode if first else "", impl, _fmt_time(m.median), _fmt_time(m.iqr),
                _fmt_ratio(r.speedup(impl, REFERENCE)),
                _fmt_ratio(r.speedup(impl, COMPILE)) if impl != COMPILE else "",
                "-" if gbps is None else f"{gbps:.1f}",
            ))
            first = False
        rows.append(None)  # a blank line between groups
    out = text_table(header, rows, right={4, 5, 6, 7, 8})
    while out and not out[-1]:
        out.pop()

    skipped = {}
    for r in results:
        for impl, why in r.skipped.items():
            skipped.setdefault((impl, why), None)
    if skipped:
        out += ["", "Not timed:"] + [f"  {impl}: {why}" for impl, why in skipped]
    out += ["", "vs reference = reference median / this median; vs compile = "
                "torch.compile(reference) median / this median (higher is faster)."]
    if checks:
        out += ["", "Acceptance targets:"]
        for c in checks:
            out.append(f"  [{c.status.upper():>10}] {c.target.describe(c.case)}: {c.detail}")
    return "\n".join(out)


# ----------------------------------------------------------------------------- JSON

def _result_dict(r: Result) -> dict:
    impls = {}
    for impl, m in r.measurements.items():
        impls[impl] = {
            "available": True,
            **{f"{k}_s" if k in ("median", "iqr", "min", "mean") else k: v
               for k, v in m.to_dict().items()},
            "speedup_vs_reference": r.speedup(impl, REFERENCE),
            "speedup_vs_compile": r.speedup(impl, COMPILE) if impl != COMPILE else None,
            "gb_per_s": r.gb_per_s(impl),
            "tflop_per_s": r.tflop_per_s(impl),
        }
    for impl, why in r.skipped.items():
        impls[impl] = {"available": False, "reason": why}
    return {
        "op": r.case.name,
        "size": r.size.name,
        "size_label": r.size.label,
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in r.size.params.items()},
        "mode": r.mode,
        "dtype": str(r.case.dtype).removeprefix("torch."),
        "device": r.device,
        "bytes_moved": r.case.bytes_moved(r.size, r.mode, r.case.dtype)
        if r.case.bytes_moved else None,
        "flops": r.case.flops(r.size, r.mode) if r.case.flops else None,
        "implementations": impls,
    }


def to_json(results: list[Result], machine: dict, settings: dict,
            checks: list[TargetCheck] = ()) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "machine": machine,
        "settings": settings,
        "results": [_result_dict(r) for r in results],
        "targets": [c.to_dict() for c in checks],
    }


def write_json(record: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(record, f, indent=2, default=str)
        f.write("\n")


# ----------------------------------------------------------------------------- chart

def write_chart(results: list[Result], path: str, title: str) -> None:
    """Bars of speedup over the eager reference: one panel per op, one group per (size, mode),
    one bar per implementation. Drawn with the Agg canvas, never a window."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cases = list(dict.fromkeys(r.case.name for r in results))
    fig = Figure(figsize=(max(6.0, 2.2 * max(
        sum(1 for r in results if r.case.name == c) for c in cases)), 3.6 * len(cases)),
        layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(cases), 1, squeeze=False)[:, 0]
    for ax, name in zip(axes, cases):
        group = [r for r in results if r.case.name == name]
        impls = list(dict.fromkeys(i for r in group for i in r.measurements if i != REFERENCE))
        width = 0.8 / max(1, len(impls))
        for k, impl in enumerate(impls):
            xs, ys = [], []
            for j, r in enumerate(group):
                ratio = r.speedup(impl, REFERENCE)
                if ratio is not None:
                    xs.append(j + (k - (len(impls) - 1) / 2) * width)
                    ys.append(ratio)
            bars = ax.bar(xs, ys, width, label=impl)
            ax.bar_label(bars, labels=[f"{y:.2g}x" for y in ys], fontsize=7, padding=1)
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_yscale("log")
        ax.set_xticks(range(len(group)), [f"{r.size.label}\n{r.mode}" for r in group])
        ax.set_ylabel("speedup vs eager reference")
        ax.set_title(f"{name} ({str(group[0].case.dtype).removeprefix('torch.')})")
        ax.margins(y=0.15)
        if impls:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120)
