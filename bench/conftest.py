"""pytest-benchmark over genfast's benchmark registry (genfast/benchmark/).

``python -m pytest bench`` times every case; ``python -m pytest bench --benchmark-disable``
runs each timed call once, as a smoke test. The cases, inputs and timed callables are the ones
``genfast bench`` uses (genfast.benchmark.build), so both report the same thing.
"""
import pytest

from genfast.benchmark import COMPILE, build, default_device, matrix


def pytest_collect_file(file_path, parent):
    # pytest.ini collects test_*.py only; benchmark suites are named bench_<stem>.py. A file
    # named on the command line is collected by pytest itself already.
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def bench_params(case, device=None):
    """pytest params (size, mode, implementation name) for one case on ``device``, with the
    implementations that cannot run here marked as skipped and why."""
    device = device or default_device()
    params = []
    for size, mode, impl in matrix(case, device):
        marks = [pytest.mark.skip(reason=f"{impl.name}: {impl.skip}")] if impl.skip else []
        params.append(pytest.param(size, mode, impl.name, marks=marks,
                                   id=f"{size.name}-{mode}-{impl.name}"))
    return params


@pytest.fixture
def run_bench(benchmark):
    """run_bench(case, size, mode, impl) times one implementation with pytest-benchmark, and
    returns the timed callable.

    Results are grouped by (op, size, mode), so pytest-benchmark's table compares the
    reference, torch.compile(reference) and the backends side by side.
    """
    def run(case, size, mode, impl):
        device = default_device()
        if impl == COMPILE:
            try:
                fn = build(case, size, mode, impl, device)
            except Exception as exc:  # noqa: BLE001 - a compiler failure means unavailable
                pytest.skip(f"torch.compile failed: {type(exc).__name__}: {exc}")
        else:
            fn = build(case, size, mode, impl, device)
        benchmark.group = f"{case.name} {size.name} ({size.label}) {mode} on {device}"
        benchmark.extra_info.update(op=case.name, size=size.label, mode=mode, impl=impl,
                                    device=device, dtype=str(case.dtype))
        if case.bytes_moved is not None:
            benchmark.extra_info["bytes_moved"] = case.bytes_moved(size, mode, case.dtype)
        benchmark(fn)
        return fn

    return run
