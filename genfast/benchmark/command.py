"""``genfast bench``: times every registered op against its reference and torch.compile."""
from __future__ import annotations

import logging
import os
import time

import torch

from genfast._backend import FAST_BACKENDS
from genfast.benchmark import report, sampling
from genfast.benchmark.cases import FWD_BWD, case_names, get_cases
from genfast.benchmark.runner import (default_device, implementations, plan, run_case,
                                      torch_threads)
from genfast.benchmark.timing import TimingSettings


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def register(subparsers) -> None:
    """Adds the ``bench`` subcommand to the ``genfast`` parser."""
    parser = subparsers.add_parser(
        "bench", help="time genfast's ops against PyTorch and torch.compile",
        description="Times each op's eager PyTorch reference, torch.compile(reference) and every "
                    "usable fast backend, forward+backward at the large size, then samples a "
                    "PixelCNN with the cached and the naive method (the naive time estimated); "
                    "--full times every op forward and forward+backward at a small and a large "
                    "size and samples every autoregressive model whole. Prints each result as it "
                    "is measured, then tables; writes bench.json and bench.png to --out and "
                    "appends to bench.csv there.")
    parser.add_argument("--op", action="append", type=_comma_list, metavar="NAME[,NAME]",
                        help=f"op or sampling case to time (repeatable; default: all). "
                             f"Choices: {', '.join(case_names() + sampling.case_names())}")
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
                        help="few, short repeats: a smoke run for CI, not for numbers to quote")
    parser.add_argument("--repeats", type=int, default=None, metavar="N",
                        help=f"timed blocks per measurement (default: "
                             f"{TimingSettings.standard().repeats}, {TimingSettings().repeats} "
                             f"with --full, {TimingSettings.quick().repeats} with --quick)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--out", default="bench-results", metavar="DIR",
                        help="directory for bench.json, bench.csv and bench.png (default: "
                             "./bench-results)")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 if an acceptance target fails")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run, parser=parser)


def _validate(args) -> tuple[list, list, str, list[str] | None, TimingSettings]:
    parser = args.parser
    names = [name for group in (args.op or []) for name in group]
    sampling_names = [n for n in names if n in sampling.case_names()]
    ops = [n for n in names if n not in sampling_names]
    try:
        cases = get_cases(ops) if ops else ([] if names else get_cases())
    except ValueError as exc:
        parser.error(f"{exc}, {', '.join(sampling.case_names())}")
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
    return cases, sampling_cases, device, backends, settings


def run(args) -> int:
    from tqdm import tqdm

    cases, sampling_cases, device, backends, settings = _validate(args)
    # torch.compile's C++ toolchain setup warns on every GPU-less machine with a CUDA build of
    # torch that no CUDA runtime is found; irrelevant to CPU timings, and it breaks the table.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    started = time.perf_counter()
    results = []
    with torch_threads(args.threads):
        machine = report.machine_info(device)
        scope = "full" if args.full else "standard"
        print(f"genfast bench on {device} ({machine['device_name']}), torch "
              f"{machine['torch_version']}, {machine['torch_threads']} threads, {scope} "
              f"{'quick ' if args.quick else ''}run", flush=True)
        load = machine["load_average_1min"]
        if device == "cpu" and load is not None and load > 0.5 * (machine["cpus_usable"] or 1):
            print(f"note: the machine is busy (1-minute load average {load:.2f}); CPU timings "
                  "will be noisy", flush=True)
        # The standard run: each op once, at its large size, forward+backward.
        work = list(plan(cases) if args.full else plan(cases, ["large"], [FWD_BWD]))
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
    elapsed = time.perf_counter() - started

    checks = report.check_targets(results, device)
    if results:
        print()
        print(report.format_table(results, checks))
    if sampled:
        print()
        print(sampling.format_sampling_table(sampled))
    settings_record = {
        "quick": args.quick, "full": args.full, "compile": not args.no_compile,
        "backends": backends, "threads": args.threads, "timing": settings.to_dict(),
        "elapsed_s": round(elapsed, 2),
        "ops": [c.name for c in cases] + [c.name for c in sampling_cases],
    }
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, report.JSON_NAME)
    csv_path = os.path.join(args.out, report.CSV_NAME)
    png_path = os.path.join(args.out, report.PNG_NAME)
    record = report.to_json(results, machine, settings_record, checks)
    record["sampling"] = [r.to_dict() for r in sampled]
    report.write_json(record, json_path)
    report.append_csv(report.csv_rows(results, sampled, machine, settings_record), csv_path)
    written = f"{json_path}, {csv_path} (appended)"
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
