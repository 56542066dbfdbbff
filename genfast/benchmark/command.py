"""``genfast bench``: times every registered op against its reference and torch.compile."""
from __future__ import annotations

import logging
import os
import time

import torch

from genfast._backend import FAST_BACKENDS
from genfast.benchmark import report, sampling, throughput
from genfast.benchmark.cases import FWD_BWD, SIZE_NAMES, case_names, get_cases
from genfast.benchmark.models import ModelCase
from genfast.benchmark.runner import (default_device, implementations, plan, run_case,
                                      torch_threads)
from genfast.benchmark.timing import TimingSettings
from genfast.isa import LEVELS, cpu_isa_levels, use_cpu_isa


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def register(subparsers) -> None:
    """Adds the ``bench`` subcommand to the ``genfast`` parser."""
    parser = subparsers.add_parser(
        "bench", help="time genfast's ops against PyTorch and torch.compile",
        description="Times each op's eager PyTorch reference, torch.compile(reference) and every "
                    "usable fast backend, forward+backward at the large size; a training step "
                    "and an evaluate pass of each whole model (model_*) at batch 16 on the "
                    "reference and the fast backends; then samples a PixelCNN with the cached "
                    "and the naive method (the naive time estimated). --full times every op "
                    "forward and forward+backward at a small and a large size, every whole "
                    "model at batch 16 and 64 with its torch.compile too, samples every "
                    "autoregressive model whole and measures sampling throughput at batch 1 "
                    "to 256 (sampling_throughput, also by --op). Prints each result as it is "
                    "measured, then tables; writes bench.json, bench.png (and "
                    "sampling_throughput.png) to --out and appends to bench.csv there.")
    parser.add_argument("--op", action="append", type=_comma_list, metavar="NAME[,NAME]",
                        help=f"op or sampling case to time (repeatable; default: all). "
                             f"Choices: {', '.join(_choices())}")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="device to time on (default: cuda if available, else cpu)")
    parser.add_argument("--backends", type=_comma_list, metavar="NAME[,NAME]", default=None,
                        help=f"fast backends to time (default: every usable one of "
                             f"{', '.join(FAST_BACKENDS)}); the reference is always timed")
    parser.add_argument("--no-compile", action="store_true",
                        help="do not time torch.compile(reference)")
    parser.add_argument("--full", action="store_true",
                        help="every op at every size and mode, torch.compile however long it "
                             "takes, every sampling case with whole naive runs (tens of minutes)")
    parser.add_argument("--quick", action="store_true",
                        help="few, short repeats, whole models at batch 16 only, sampling on 8x8 "
                             "images: a smoke run for CI, not for numbers to quote")
    parser.add_argument("--size", choices=SIZE_NAMES, default=None,
                        help="time only this size of each case (an op's small or large input, a "
                             "whole model's batch 16 or 64; default: the run's sizes)")
    parser.add_argument("--repeats", type=int, default=None, metavar="N",
                        help=f"timed blocks per measurement (default: "
                             f"{TimingSettings.standard().repeats}, {TimingSettings().repeats} "
                             f"with --full, {TimingSettings.quick().repeats} with --quick)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--cpu-isa", choices=LEVELS, default=None, metavar="LEVEL",
                        help="run the cpu backend's kernels at this ISA level, one of "
                             f"{', '.join(LEVELS)} (default: the best this CPU has; the "
                             "environment's GENFAST_CPU_ISA otherwise)")
    parser.add_argument("--out", default="bench-results", metavar="DIR",
                        help="directory for bench.json, bench.csv and bench.png (default: "
                             "./bench-results)")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 if an acceptance target fails")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run, parser=parser)


def _choices() -> list[str]:
    return case_names() + sampling.case_names() + [throughput.NAME]


def _validate(args) -> tuple[list, list, bool, str, list[str] | None, TimingSettings]:
    parser = args.parser
    names = [name for group in (args.op or []) for name in group]
    sampling_names = [n for n in names if n in sampling.case_names()]
    ops = [n for n in names if n not in sampling_names and n != throughput.NAME]
    # The sweep draws 28x28 images at batch 1 to 256 per model: minutes, so only when asked.
    sweep = throughput.NAME in names or (not names and args.full)
    try:
        cases = get_cases(ops) if ops else ([] if names else get_cases())
    except ValueError as exc:
        parser.error(f"{exc}, {', '.join(sampling.case_names() + [throughput.NAME])}")
    default_sampling = sampling.case_names() if args.full else sampling.case_names()[:1]
    sampling_cases = sampling.get_cases(sampling_names if names else default_sampling)
    device = args.device or default_device()
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch here")
    backends = args.backends
    if backends is not None:
        unknown = [b for b in backends if b not in FAST_BACKENDS]
        if unknown:
            parser.error(f"unknown backend {', '.join(map(repr, unknown))} in --backends; "
                         f"choose from: {', '.join(FAST_BACKENDS)}")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    settings = (TimingSettings.quick() if args.quick else
                TimingSettings() if args.full else TimingSettings.standard())
    if args.repeats is not None:
        settings = TimingSettings(**{**settings.to_dict(), "repeats": args.repeats})
    return cases, sampling_cases, sweep, device, backends, settings


def _work(cases, full: bool, quick: bool, size: str | None = None):
    """Every (case, size, mode) of the run, in report order: an op forward+backward at its
    large size (every size and mode with --full); a whole model in both modes at batch 16
    (and 64 with --full). ``size`` (--size) replaces the run's sizes."""
    for case in cases:
        if isinstance(case, ModelCase):
            sizes = [size] if size else [s.name for s in case.sizes][:None if full else 1]
            yield from plan([case], sizes)
        elif full:
            yield from plan([case], [size] if size else None)
        else:
            yield from plan([case], [size or "large"], [FWD_BWD])


def run(args) -> int:
    cases, sampling_cases, sweep, device, backends, settings = _validate(args)
    # torch.compile's C++ toolchain setup warns on every GPU-less machine with a CUDA build of
    # torch that no CUDA runtime is found; irrelevant to CPU timings, and it breaks the table.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    started = time.perf_counter()
    if args.cpu_isa is not None:
        if args.cpu_isa not in cpu_isa_levels():
            args.parser.error(f"this CPU cannot run the {args.cpu_isa!r} kernels; it supports "
                              f"{', '.join(cpu_isa_levels())}")
        with use_cpu_isa(args.cpu_isa):
            return _run(args, cases, sampling_cases, sweep, device, backends, settings, started)
    return _run(args, cases, sampling_cases, sweep, device, backends, settings, started)


def _run(args, cases, sampling_cases, sweep, device, backends, settings, started) -> int:
    from tqdm import tqdm

    results = []
    with torch_threads(args.threads):
        machine = report.machine_info(device)
        isa = (f", cpu kernels at {machine['genfast_cpu_isa']} of "
               f"{'/'.join(machine['genfast_cpu_isa_levels'])}"
               if machine["genfast_cpu_isa"] else "")
        scope = "full" if args.full else "standard"
        print(f"genfast bench on {device} ({machine['device_name']}{isa}), torch "
              f"{machine['torch_version']}, {machine['torch_threads']} threads, {scope} "
              f"{'quick ' if args.quick else ''}run", flush=True)
        load = machine["load_average_1min"]
        if device == "cpu" and load is not None and load > 0.5 * (machine["cpus_usable"] or 1):
            print(f"note: the machine is busy (1-minute load average {load:.2f}); CPU timings "
                  "will be noisy", flush=True)
        work = list(_work(cases, args.full, args.quick, args.size))
        # On stderr; disable=None: tqdm draws only on a terminal, so logs (CI) stay readable.
        bar = tqdm(work, desc="genfast bench", unit="case",
                   disable=True if args.no_progress else None, leave=False)
        for case, size, mode in bar:
            impls = implementations(case, device, backends, compile=not args.no_compile,
                                    slow_compile=args.full)

            def show(impl, case=case, size=size, mode=mode):
                bar.set_postfix_str(f"{case.name} {size.name} {mode} {impl}")

            results.append(run_case(case, size, mode, device, impls, settings, on_impl=show))
            tqdm.write(report.format_line(results[-1]))
        bar.close()
        sampled = []
        for case in sampling_cases:
            estimate = not args.full
            print(f"sampling {case.name} ({case.label(args.quick)}), "
                  f"{'naive estimated' if estimate else 'naive'} then cached ...", flush=True)
            sampled.append(sampling.run_sampling_case(case, device, quick=args.quick,
                                                      repeats=1 if args.quick else 3,
                                                      estimate_naive=estimate))
        swept = []
        if sweep:
            print(f"{throughput.NAME}: cached and naive sampling, batch "
                  f"{'/'.join(map(str, throughput.BATCHES))}, per autoregressive model ...",
                  flush=True)
            swept = throughput.run_throughput(
                device, quick=args.quick,
                on_point=lambda p: print(throughput.format_line(p), flush=True))
    elapsed = time.perf_counter() - started

    checks = report.check_targets(results, device)
    if results:
        print()
        print(report.format_table(results, checks))
    if sampled:
        print()
        print(sampling.format_sampling_table(sampled))
    if swept:
        print()
        print(throughput.format_table(swept))
    settings_record = {
        "quick": args.quick, "full": args.full, "compile": not args.no_compile,
        "backends": backends, "threads": args.threads, "timing": settings.to_dict(),
        "elapsed_s": round(elapsed, 2),
        "ops": [c.name for c in cases] + [c.name for c in sampling_cases]
        + ([throughput.NAME] if sweep else []),
    }
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, report.JSON_NAME)
    csv_path = os.path.join(args.out, report.CSV_NAME)
    png_path = os.path.join(args.out, report.PNG_NAME)
    record = report.to_json(results, machine, settings_record, checks)
    record["sampling"] = [r.to_dict() for r in sampled]
    record["sampling_throughput"] = [p.to_dict() for p in swept]
    report.write_json(record, json_path)
    report.append_csv(report.csv_rows(results, sampled, machine, settings_record)
                      + throughput.csv_rows(swept, report.csv_common(machine, settings_record)),
                      csv_path)
    written = f"{json_path}, {csv_path} (appended)"
    if swept:
        chart = os.path.join(args.out, throughput.PNG_NAME)
        throughput.write_chart(swept, chart, f"genfast sampling on {device}: "
                               f"{machine['device_name']}, {machine['torch_threads']} threads")
        written += f", {chart}"
    if results:  # the chart shows the op cases; the sampling table says it all
        report.write_chart(report.read_run(csv_path, machine["date"]), png_path,
                           f"genfast bench on {device}: {machine['device_name']}, "
                           f"{machine['torch_threads']} threads, torch "
                           f"{machine['torch_version']}")
        written += f" and {png_path}"
    print(f"\nWrote {written} ({elapsed:.1f} s of benchmarking).")
    failed = [c.status for c in checks] + [r.status for r in sampled]
    if args.check and "fail" in failed:
        return 1
    return 0
