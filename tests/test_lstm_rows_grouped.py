"""genfast.ops.lstm_rows_grouped: G groups of the batch, each with its own weights, in one
recurrence (one launch per row on Triton, which the Diagonal BiLSTM's two directions share).
Every backend against lstm_rows_ref per group, forward and backward; opcheck and gradcheck of
the grouped Triton op; the launch count; bad input."""
import zlib

import pytest
import torch

from genfast.nn import DiagonalBiLSTM
from genfast.ops import lstm_rows_grouped, lstm_rows_ref
from genfast.ops.lstm_row import _FORWARD_OPS, IMPLEMENTED
from conftest import assert_close

# (groups, images per group, hidden, rows, length, k, pad_left)
CASES = [(2, 1, 5, 3, 7, 2, 1), (2, 3, 4, 4, 5, 3, 1), (3, 2, 6, 2, 9, 2, 0)]


def _seed(*key):
    torch.manual_seed(zlib.crc32(repr(key).encode()))


def _inputs(case, device):
    groups, per, d, r, length, k, _ = case
    f64 = dict(dtype=torch.float64, device=device)
    gates_in = torch.randn(groups * per, 4 * d, r, length, **f64)
    weight = torch.randn(groups, 4 * d, d, k, **f64) / (d * k) ** 0.5
    bias = 0.5 * torch.randn(groups, 4 * d, **f64)
    return gates_in, weight, bias


def _per_group_reference(gates_in, weight, bias, pad_left):
    per = gates_in.shape[0] // weight.shape[0]
    outs = [lstm_rows_ref(gates_in[g * per:(g + 1) * per], weight[g], bias[g],
                          pad_left=pad_left) for g in range(weight.shape[0])]
    return torch.cat([h for h, _ in outs]), torch.cat([c for _, c in outs])


def _run(fn, inputs, grads, dtype, pad_left, **kwargs):
    leaves = [t.detach().to(dtype).requires_grad_() for t in inputs]
    h, c = fn(*leaves, pad_left=pad_left, **kwargs)
    got = torch.autograd.grad((h, c), leaves, (grads[0].to(h.dtype), grads[1].to(c.dtype)))
    return [h.detach(), c.detach(), *got]


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_matches_the_reference_per_group(backend, case, dtype):
    name, device = backend
    if name not in IMPLEMENTED:
        pytest.skip(f"lstm_rows has no {name} backend in this build")
    _seed("grouped", case, str(dtype))
    inputs = _inputs(case, device)
    groups, per, d, r, length, _, pad_left = case
    grads = (torch.randn(groups * per, d, r, length, dtype=torch.float64, device=device),
             torch.randn(groups * per, d, r, length, dtype=torch.float64, device=device))
    got = _run(lstm_rows_grouped, inputs, grads, dtype, pad_left, backend=name)
    want = _run(_per_group_reference, inputs, grads, dtype, pad_left)
    want64 = _run(_per_group_reference, [t.to(dtype).double() for t in inputs], grads,
                  torch.float64, pad_left)
    for g, w, w64 in zip(got, want, want64):
        assert g.shape == w.shape and g.dtype == w.dtype
        if dtype == torch.float64:
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)
        else:
            assert_close(g, w, w64)


def _triton_or_skip():
    if "triton" not in IMPLEMENTED:
        pytest.skip("the Triton kernels are not installed")
    return _FORWARD_OPS["triton"]


def test_triton_opcheck_and_gradcheck_with_groups():
    op = _triton_or_skip()
    _seed("grouped_opcheck")
    gates_in, weight, bias = _inputs((2, 1, 2, 2, 3, 2, 1), "cpu")
    h0 = torch.zeros(2, 2, 3, dtype=torch.float64)
    args = [t.float().requires_grad_() for t in (gates_in, weight, bias)]
    torch.library.opcheck(op, (args[0], args[1], args[2], h0.float(), h0.float(), 1))
    leaves = [t.requires_grad_() for t in (gates_in, weight, bias)]
    assert torch.autograd.gradcheck(
        lambda x, w, b: op(x, w, b, h0, h0, 1)[:2], leaves, fast_mode=True)


def test_one_launch_per_row_for_every_group(monkeypatch):
    """The Diagonal BiLSTM on Triton: each skewed step is one forward launch for both
    directions (H + W - 1 launches), and it equals the reference backend."""
    _triton_or_skip()
    from genfast.kernels import lstm_row as kernels

    launches = []
    real = kernels._forward_row_kernel

    class Counting:
        def __getitem__(self, grid):
            launches.append(grid)
            return real[grid]

    monkeypatch.setattr(kernels, "_forward_row_kernel", Counting())
    _seed("diagonal_launches")
    x = torch.randn(2, 3, 4, 5)
    fast = DiagonalBiLSTM(3, 6, backend="triton")
    reference = DiagonalBiLSTM(3, 6, backend="reference")
    reference.load_state_dict(fast.state_dict())
    got = fast(x)
    assert len(launches) == 4 + 5 - 1
    assert all(grid[0] == 2 * x.shape[0] for grid in launches)  # both directions' images
    torch.testing.assert_close(got, reference(x), rtol=1e-5, atol=1e-5)


def test_bad_input_is_a_clear_error():
    gates_in, weight, bias = _inputs((2, 1, 3, 2, 4, 2, 1), "cpu")
    with pytest.raises(ValueError, match="weight groups"):
        lstm_rows_grouped(gates_in[:1], weight, bias)
    with pytest.raises(ValueError, match="groups, 4"):
        lstm_rows_grouped(gates_in, weight[0], bias)
    with pytest.raises(ValueError, match="bias"):
        lstm_rows_grouped(gates_in, weight, bias[0])
    with pytest.raises(TypeError):
        lstm_rows_grouped(gates_in, weight.float(), bias)
