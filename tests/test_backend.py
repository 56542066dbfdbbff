"""Backend selection: reasons, the context manager, the environment variable and fallback."""
import subprocess
import sys
import textwrap

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
