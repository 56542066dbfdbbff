"""The test suite's CUDA emulator (tests/cuda_emu) itself: barriers, warp operations, shared
memory and launch checks behave as CUDA specifies (on small kernels of
tests/cuda_emu/selftest_kernels.cpp), and every __global__ kernel of csrc/cuda is run by an
emulated check against its reference."""
import math
import sys

import pytest
import torch

from cuda_emu import ORDERS, checks, global_kernels, launched, load, schedule
from genfast.ops.reparam import KL_ELEMENTWISE, KL_NONE, KL_SUM

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="the CUDA emulator runs its threads as Linux ucontext fibers")

FULL = 0xFFFFFFFF


def run(name, threads, *args, blocks=1, order="forward", seed=0):
    with schedule(order, seed) as ops:
        return ops.emu_selftest(name, blocks, threads, list(args))


@pytest.mark.parametrize("order", ORDERS)
def test_a_barrier_orders_shared_memory(order):
    got = run("neighbour", 64, 1, order=order, seed=3)
    assert got.tolist() == [(t + 1) % 64 + 2 for t in range(64)]


def test_a_missing_barrier_gives_wrong_answers():
    """Without the barrier each order reads slots not yet written (poison, -1) somewhere:
    forward every thread but the last, reverse the last thread only."""
    forward, reverse = (run("neighbour", 64, 0, order=o) for o in ("forward", "reverse"))
    assert forward.tolist() == [-1] * 63 + [2]
    assert reverse.tolist() == [t + 3 for t in range(63)] + [-1]


def test_threads_at_different_barriers_raise():
    with pytest.raises(RuntimeError, match="wait at different barriers"):
        run("split_barrier", 64, 10)


def test_threads_that_return_do_not_hold_a_barrier():
    assert run("early_return", 64, 10).tolist() == [0] * 10 + [1] * 54


def test_a_barrier_against_a_warp_operation_raises():
    with pytest.raises(RuntimeError, match="never joins"):
        run("barrier_or_shuffle", 64, 3)


def _expected_warp(op, arg, width, mask, threads):
    """CUDA's rules for the warp_kernel of selftest_kernels.cpp, on values 1000 + thread; None
    where a lane would shuffle from a lane outside the mask (undefined in CUDA: an error)."""
    out = []
    for t in range(threads):
        lane, first = t % 32, t - t % 32
        if not mask >> lane & 1:
            out.append(-1)
            continue
        segment = lane & ~(width - 1)
        members = [first + w for w in range(32) if mask >> w & 1]
        if op in (4, 5, 6):
            votes = {4: [m % arg == 0 for m in members], 5: [m == arg for m in members],
                     6: [m < arg for m in members]}[op]
            out.append(sum(v << (m - first) for m, v in zip(members, votes)) if op == 4
                       else int(any(votes) if op == 5 else all(votes)))
            continue
        if op == 8:  # __syncwarp: every lane of the mask gets through with its own value
            out.append(1000 + t)
            continue
        if op == 0:
            source = segment + arg % width
        elif op == 1:
            source = lane - arg if lane - arg >= segment else lane
        elif op == 3:
            source = lane ^ arg if lane ^ arg < segment + width else lane
        else:  # down, on ints (2) and on doubles (7)
            source = lane + arg if lane + arg < segment + width else lane
        if not mask >> source & 1:
            return None
        out.append(1000 + first + source if op != 7 else 1 + 2 * (1000 + first + source))
    return out


@pytest.mark.parametrize("op, arg, width", [
    (0, 5, 32), (0, 37, 32), (0, 3, 8), (1, 1, 32), (1, 3, 16), (2, 1, 32), (2, 16, 32),
    (2, 5, 8), (3, 1, 32), (3, 16, 32), (3, 7, 4), (3, 12, 8), (4, 3, 32), (5, 40, 32),
    (5, 500, 32), (6, 64, 32), (6, 40, 32), (7, 2, 32), (7, 3, 8), (8, 0, 32)])
@pytest.mark.parametrize("threads, mask", [(64, FULL), (96, 0x0000FFFF), (40, 0xFF)])
@pytest.mark.parametrize("order", ["forward", "random"])
def test_warp_operations_follow_cuda(op, arg, width, threads, mask, order):
    expected = _expected_warp(op, arg, width, mask, threads)
    if expected is None:
        with pytest.raises(RuntimeError, match="which the mask leaves out"):
            run("warp", threads, op, arg, width, mask, order=order, seed=7)
    else:
        got = run("warp", threads, op, arg, width, mask, order=order, seed=7)
        assert got.tolist() == expected


def test_a_mask_naming_a_missing_lane_raises():
    with pytest.raises(RuntimeError, match="beyond the 8 this warp has"):
        run("warp", 40, 2, 1, 32, FULL)


def test_a_lane_missing_from_its_own_mask_raises():
    with pytest.raises(RuntimeError, match="leaves out its own lane"):
        run("warp", 32, 9, 0, 32, 0x0000FFFF)


def test_shared_memory_is_poisoned_in_every_block():
    got = run("poison", 32, 5, blocks=2)
    assert got[:32].tolist() == list(range(32))
    assert got[32:37].tolist() == list(range(5))
    assert all(math.isnan(v) for v in got[37:].tolist())


def test_thread_and_block_orders():
    n = 2 * 40
    forward = run("order", 40, blocks=2, order="forward")
    reverse = run("order", 40, blocks=2, order="reverse")
    first, again = (run("order", 40, blocks=2, order="random", seed=11) for _ in range(2))
    assert forward.tolist() == list(range(n))
    assert reverse.tolist() == [b * 40 + t for b in (1, 0) for t in range(39, -1, -1)]
    assert sorted(first.tolist()) == list(range(n))
    assert first.tolist() not in (forward.tolist(), reverse.tolist())
    assert torch.equal(first, again)


@pytest.mark.parametrize("name, threads, blocks, message", [
    ("oversized_shared", 32, 1, "more than the 48 KiB"),
    ("order", 1025, 1, "invalid block"),
    ("order", 32, 0, "invalid grid"),
    ("dynamic_shared", 32, 1, "dynamic shared memory"),
])
def test_bad_launches_raise(name, threads, blocks, message):
    with pytest.raises(RuntimeError, match=message):
        run(name, threads, blocks=blocks)


def test_every_global_kernel_is_emulated():
    """Each __global__ function in csrc/cuda is launched by a check against its reference (one
    small case per op path here), so a kernel added later fails this test until it is."""
    load()
    checks.seed("coverage")
    checks.check_masked_conv((2, 5, 7, 6, 9, 3, 3, "A", 1, 1), torch.float32)
    checks.check_lstm_rows((2, 5, 3, 7, 3, 1), torch.float32)
    for kl_mode in (KL_NONE, KL_ELEMENTWISE, KL_SUM):
        checks.check_reparam_given_eps((5, 13), torch.float32, 2, kl_mode)
    checks.check_gated((2, 6, 5, 7), 1, torch.float32)
    checks.check_logistic_mixture((2, 3, 2, 3, 4, 256), torch.float32)
    checks.check_categorical_head((2, 6, 3, 17, 3, 5, "contiguous"), torch.float32)
    kernels = global_kernels()
    assert len(kernels) >= 12, kernels  # the parser still finds the kernels it found before
    missing = kernels - set(launched())
    assert not missing, f"__global__ kernels no emulated test launches: {sorted(missing)}"
