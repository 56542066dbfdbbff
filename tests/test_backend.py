"""Backend selection: reasons, the context manager, the environment variable, fallback, and
auto's table of backends per op and device type."""
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import genfast
from genfast import _backend


def test_backends_report_reasons():
    info = genfast.backends()
    assert set(info) == set(genfast.BACKENDS)
    assert info["reference"].available
    for name, b in info.items():
        assert b.available == (b.reason == ""), name
    if not torch.cuda.is_available():
        assert not info["cuda"].available and info["cuda"].reason


def test_auto_prefers_the_extension_on_cpu():
    expected = "cpu" if genfast.backends()["cpu"].available else "reference"
    assert _backend.select("op", None, torch.device("cpu"), torch.float32) == expected


def test_use_backend_context_manager():
    with genfast.use_backend("reference"):
        assert _backend.select("op", None, torch.device("cpu"), torch.float32) == "reference"
        # An explicit backend= wins over the context.
        if genfast.backends()["cpu"].available:
            assert _backend.select("op", "cpu", torch.device("cpu"), torch.float32) == "cpu"
    with pytest.raises(ValueError, match="unknown backend"):
        with genfast.use_backend("fastest"):
            pass


def test_op_without_a_backend_is_an_error():
    with pytest.raises(ValueError, match="has no 'cuda' backend"):
        _backend.select("op", "cuda", torch.device("cpu"), torch.float32, ("reference", "cpu"))


def _run_python(code: str, **env) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=300)


def test_environment_variable_sets_the_default():
    result = _run_python("""
        import torch
        from genfast import _backend
        print(_backend.select("op", None, torch.device("cpu"), torch.float32))
    """, GENFAST_BACKEND="reference")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "reference"


def test_missing_extension_falls_back_with_one_warning():
    result = _run_python("""
        import sys, warnings
        sys.modules["genfast._C"] = None  # makes `from genfast import _C` fail, as a broken build
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            import torch, genfast
            mu, logvar, eps = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
            for _ in range(3):
                z = genfast.reparameterize(mu, logvar, eps=eps, backend="cpu")
        assert torch.allclose(z, mu + torch.exp(0.5 * logvar) * eps)
        info = genfast.backends()["cpu"]
        assert not info.available and "genfast._C did not load" in info.reason
        messages = [str(w.message) for w in caught]
        assert sum("did not load" in m and "Rebuild" in m for m in messages) == 1, messages
        assert sum("backend 'cpu' is unavailable" in m for m in messages) == 1, messages
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def _ops_that_select() -> set[str]:
    """Every op name genfast's code passes to _backend.select."""
    root = Path(genfast.__file__).parent
    return {op for path in root.rglob("*.py")
            for op in re.findall(r'select\(\s*"(\w+)"', path.read_text())}


def test_the_auto_table_covers_every_op_that_selects():
    ops = _ops_that_select()
    assert {"masked_conv2d", "lstm_rows", "reparameterize_kl", "gated_activation"} <= ops
    for op in ops:
        for device_type in ("cpu", "cuda"):
            entry = _backend.AUTO_TABLE[(op, device_type)]
            assert entry.reason and set(entry.order) <= set(genfast.BACKENDS), (op, device_type)
            assert entry.order[-1] == "reference", "auto must end on the reference"


def test_cuda_entries_say_where_their_figures_come_from():
    for (op, device_type), entry in _backend.AUTO_TABLE.items():
        if device_type == "cuda" and " ms" in entry.reason:
            assert "projection, not measured: no GPU has run these yet" in entry.reason, op


def _everything_usable(monkeypatch, missing=()):
    """Every backend runs here on every device and auto skips none, but those in ``missing``."""
    monkeypatch.setattr(_backend, "_missing_reason",
                        lambda name: "gone for the test" if name in missing else "")
    monkeypatch.setattr(_backend, "_devices", lambda name: ("cpu", "cuda"))
    monkeypatch.setattr(_backend, "_auto_skip_reason", lambda name, device_type: "")


@pytest.mark.parametrize("op,device_type", list(_backend.AUTO_TABLE), ids="-".join)
def test_auto_follows_the_table(op, device_type, monkeypatch):
    """On a CUDA device too (no GPU needed: only availability is pretended): auto takes the
    table's first backend, and the next when that one is missing."""
    order = _backend.AUTO_TABLE[(op, device_type)].order
    device = torch.device(device_type)
    for k in range(len(order)):
        _everything_usable(monkeypatch, missing=order[:k])
        assert _backend.select(op, None, device, torch.float32) == order[k]
        # An op's build without that kernel: auto goes on down the order too.
        implemented = tuple(b for b in genfast.BACKENDS if b not in order[:k])
        _everything_usable(monkeypatch)
        assert _backend.select(op, "auto", device, torch.float32, implemented) == order[k]


def test_auto_on_cuda_is_the_tables_not_one_order_for_all(monkeypatch):
    _everything_usable(monkeypatch)
    cuda = torch.device("cuda")
    assert _backend.select("masked_conv2d", None, cuda, torch.float32) == "reference"
    assert _backend.select("lstm_rows", None, cuda, torch.float32) == "triton"
    assert _backend.select("reparameterize_kl", None, cuda, torch.float32) == "cuda"
    assert _backend.select("gated_activation", None, cuda, torch.float32) == "cuda"


def test_ops_and_devices_without_an_entry(monkeypatch):
    _everything_usable(monkeypatch)
    assert _backend.select("op", None, torch.device("cpu"), torch.float32) == "cpu"
    assert _backend.select("op", None, torch.device("cuda"), torch.float32) == "reference"
    assert _backend.select("masked_conv2d", None, torch.device("xpu"), torch.float32) \
        == "reference"


def test_auto_table_shows_the_entries_and_the_pick_here():
    table = genfast.auto_table()
    assert set(table) == set(_backend.AUTO_TABLE)
    for (op, device_type), row in table.items():
        assert row["order"] == _backend.AUTO_TABLE[(op, device_type)].order and row["reason"]
        picked, order = row["picks_here"], row["order"]
        # Every backend before the pick is passed over, with its reason; all of them when the
        # order runs out and auto falls back on the reference.
        before = order[:order.index(picked)] if picked in order else order
        assert picked in order or picked == "reference"
        assert tuple(row["passed_over"]) == before and all(row["passed_over"].values())
        if device_type == "cpu" and op != "categorical_draw":
            assert row["picks_here"] == _backend.select(op, None, torch.device("cpu"),
                                                        torch.float32)


def test_the_draw_follows_the_table():
    from genfast import _ext
    from genfast.ops import sample_draw

    assert not sample_draw.has_cpu_kernels(torch.device("cuda"), torch.float32)
    assert sample_draw.has_cpu_kernels(torch.device("cpu"), torch.float32) == (
        _ext.has_op("categorical_draw") and _ext.has_op("pointwise_categorical_draw"))
