"""What ``genfast bench`` prints and writes: a line per result, the table, the JSON record of
the run, the CSV file that every run appends to, and the speedup chart drawn from that file."""
from __future__ import annotations

import csv
import datetime
import json
import os
import platform
import subprocess
from dataclasses import dataclass

import torch

import genfast
from genfast.isa import cpu_isa, cpu_isa_levels
from genfast.benchmark.cases import OpCase, Target
from genfast.benchmark.runner import COMPILE, REFERENCE, Result
from genfast.benchmark.timing import NOISY_SPREAD

JSON_NAME, PNG_NAME, CSV_NAME = "bench.json", "bench.png", "bench.csv"
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


def _genfast_commit() -> str:
    """The commit of the genfast checkout this runs from ('+changes' when its files differ),
    or 'unknown' for an installed copy."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(genfast.__file__)))
    if not os.path.exists(os.path.join(root, ".git")):
        return "unknown"
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit + ("+changes" if changed else "")) if commit else "unknown"


def _cpu_isa_or_none(query):
    try:
        return query()
    except RuntimeError:  # no extension: the cpu backend is off anyway
        return None


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
        # the ISA level genfast's CPU kernels ran at (genfast.cpu_isa), and what the CPU has
        "genfast_cpu_isa": _cpu_isa_or_none(cpu_isa),
        "genfast_cpu_isa_levels": _cpu_isa_or_none(cpu_isa_levels),
        "torch_version": torch.__version__,
        "torch_cuda_version": torch.version.cuda,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "genfast_version": genfast.__version__,
        "genfast_commit": _genfast_commit(),
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
            if target.max_memory_vs_reference is not None:
                ratio = result.memory_ratio(target.backend)
                if ratio is None:
                    complete = False
                    detail += "; peak memory not measured"
                else:
                    ok = ok and ratio <= target.max_memory_vs_reference
                    detail += (f", peak memory {ratio:.3f}x reference's "
                               f"(want <= {target.max_memory_vs_reference:g}x)")
            status = "fail" if not ok else ("pass" if complete else "incomplete")
            if result.noisy():
                detail += "; noisy timings, rerun on a quiet machine"
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


def _fmt_noise(r: Result) -> str:
    noisy = r.noisy()
    return (" [noisy: " + ", ".join(f"{impl} spread {spread:.0%}" for impl, spread in noisy.items())
            + "]") if noisy else ""


def format_line(r: Result) -> str:
    """One result as one line, printed as soon as it is measured."""
    times = ", ".join(f"{impl} {_fmt_time(m.median)}" for impl, m in r.measurements.items())
    ratios = [f"{_fmt_ratio(r.speedup(impl, REFERENCE))} vs reference"
              + (f", {_fmt_ratio(r.speedup(impl, COMPILE))} vs compile"
                 if COMPILE in r.measurements else "")
              for impl in r.measurements if impl not in (REFERENCE, COMPILE)]
    verdict = r.auto_verdict()
    auto = f"; {verdict.describe(r.skipped)}" if verdict else ""
    return (f"{r.case.name} {r.size.label} {r.mode}: {times}"
            + (f" ({'; '.join(ratios)})" if ratios else "") + auto + _fmt_memory(r)
            + _fmt_noise(r))


def _fmt_bytes(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def _fmt_memory(r: Result) -> str:
    """Each implementation's peak memory of one call and its ratio to the reference's."""
    if not r.peak_memory:
        return ""
    parts = [f"{impl} {_fmt_bytes(n)}" + (f" ({r.memory_ratio(impl):.3f}x)"
                                          if impl != REFERENCE and r.memory_ratio(impl) else "")
             for impl, n in r.peak_memory.items()]
    return "; peak memory " + ", ".join(parts)


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
    memory = [r for r in results if r.peak_memory]
    if memory:
        out += ["", "Peak memory of one call beyond its inputs (torch.profiler's allocator "
                    "events on the CPU, torch.cuda's peak on a GPU; genfast/benchmark/memory.py):"]
        out += [f"  {r.case.name} {r.size.name} {r.mode}{_fmt_memory(r).removeprefix(';')}"
                for r in memory]
    verdicts = [(r, r.auto_verdict()) for r in results if r.auto is not None]
    if verdicts:
        out += ["", f"auto's choice on {results[0].device} (genfast.auto_table()) against the "
                    f"fastest timed of the reference and the fast backends:"]
        out += [f"  {r.case.name} {r.size.name} {r.mode}: {v.describe(r.skipped)}"
                for r, v in verdicts]
    noisy = [f"  {r.case.name} {r.size.name} {r.mode}:{_fmt_noise(r)}" for r in results
             if r.noisy()]
    if noisy:
        out += ["", f"Noisy (an interquartile range over {NOISY_SPREAD:.0%} of the median: the "
                    "machine's load changed while these were timed; the implementations were "
                    "timed in turn, so their ratios saw the same load, but rerun on a quiet "
                    "machine for figures to quote):"] + noisy
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
            "peak_memory_bytes": r.peak_memory.get(impl),
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
        "auto": r.auto_verdict().to_dict() if r.auto is not None else None,
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


# ----------------------------------------------------------------------------- CSV

# One row per (case, size, mode, provider) of a run; every run appends its rows to the same
# file, so results accumulate across commits, machines and days (Liger-Kernel's data file).
CSV_FIELDS = ("run", "genfast_commit", "device", "device_name", "cpu_capability",
              "genfast_cpu_isa", "torch_version", "torch_threads", "scope", "op", "size",
              "size_label", "mode",
              "dtype", "provider", "p20_s", "p50_s", "p80_s", "blocks", "calls_per_block")
SAMPLE_MODE = "sample"  # the mode of the sampling rows (whole sampling runs)


def csv_common(machine: dict, settings: dict) -> dict:
    """The fields every row of a run shares: the run's stamp, machine, versions and scope."""
    scope = ("full" if settings.get("full") else "standard") + \
        (" quick" if settings.get("quick") else "")
    return {"run": machine["date"], "genfast_commit": machine.get("genfast_commit", "unknown"),
            "device": machine["device"], "device_name": machine["device_name"],
            "cpu_capability": machine["cpu_capability"],
            "genfast_cpu_isa": machine.get("genfast_cpu_isa"),
            "torch_version": machine["torch_version"],
            "torch_threads": machine["torch_threads"], "scope": scope}


def csv_rows(results: list[Result], sampled: list, machine: dict, settings: dict) -> list[dict]:
    """The run's rows: each timed implementation of each op case, and each sampling method."""
    common = csv_common(machine, settings)
    rows = []
    for r in results:
        for impl, m in r.measurements.items():
            rows.append({**common, "op": r.case.name, "size": r.size.name,
                         "size_label": r.size.label, "mode": r.mode,
                         "dtype": str(r.case.dtype).removeprefix("torch."), "provider": impl,
                         "p20_s": m.p20, "p50_s": m.median, "p80_s": m.p80, "blocks": m.blocks,
                         "calls_per_block": m.number})
    for s in sampled:
        size = "small" if s.quick else "large"
        naive = "naive (estimated)" if s.naive_estimated else "naive"
        cached = sorted(s.cached_s)
        for provider, times in ((naive, [s.naive_s]), ("cached", cached)):
            rows.append({**common, "op": s.case.name, "size": size,
                         "size_label": s.case.label(s.quick), "mode": SAMPLE_MODE,
                         "dtype": "float32", "provider": provider, "p20_s": times[0],
                         "p50_s": times[len(times) // 2], "p80_s": times[-1],
                         "blocks": len(times), "calls_per_block": 1})
    return rows


def append_csv(rows: list[dict], path: str) -> None:
    """Appends ``rows`` to the CSV at ``path`` (with its header if the file is new). A file
    with another header (an older genfast's) is moved aside to ``path + '.old'`` first."""
    if os.path.exists(path):
        with open(path, newline="") as f:
            header = next(csv.reader(f), None)
        if header is not None and tuple(header) != CSV_FIELDS:
            os.replace(path, path + ".old")
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def read_run(path: str, run: str) -> list[dict]:
    """The rows of one run (by its ``run`` stamp) from the CSV at ``path``."""
    with open(path, newline="") as f:
        return [row for row in csv.DictReader(f) if row["run"] == run]


# ----------------------------------------------------------------------------- chart

def write_chart(rows: list[dict], path: str, title: str) -> None:
    """Bars of speedup over the eager reference, from one run's CSV rows: one panel per op, one
    group per (size, mode), one bar per provider. Drawn with the Agg canvas, never a window."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    medians: dict[str, dict[tuple[str, str], dict[str, float]]] = {}
    for row in rows:
        if row["mode"] == SAMPLE_MODE:
            continue
        group = (row["size_label"], row["mode"])
        medians.setdefault(row["op"], {}).setdefault(group, {})[row["provider"]] = \
            float(row["p50_s"])
    cases = list(medians)
    fig = Figure(figsize=(max(6.0, 2.2 * max(len(g) for g in medians.values())),
                          3.6 * len(cases)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(cases), 1, squeeze=False)[:, 0]
    for ax, name in zip(axes, cases):
        groups = medians[name]
        impls = list(dict.fromkeys(p for g in groups.values() for p in g if p != REFERENCE))
        width = 0.8 / max(1, len(impls))
        for k, impl in enumerate(impls):
            xs, ys = [], []
            for j, times in enumerate(groups.values()):
                if impl in times and REFERENCE in times:
                    xs.append(j + (k - (len(impls) - 1) / 2) * width)
                    ys.append(times[REFERENCE] / times[impl])
            bars = ax.bar(xs, ys, width, label=impl)
            ax.bar_label(bars, labels=[f"{y:.2g}x" for y in ys], fontsize=7, padding=1)
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_yscale("log")
        ax.set_xticks(range(len(groups)), [f"{label}\n{mode}" for label, mode in groups])
        ax.set_ylabel("speedup vs eager reference")
        ax.set_title(name)
        ax.margins(y=0.15)
        if impls:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120)
