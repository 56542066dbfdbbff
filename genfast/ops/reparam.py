"""Reparameterized Gaussian sampling fused with the KL to a standard normal, for VAEs.

z = mu + exp(logvar / 2) * eps with eps ~ N(0, I) (Kingma & Welling 2014, "Auto-Encoding
Variational Bayes", eq. 10), and KL(N(mu, exp(logvar)) || N(0, I)) =
0.5 * sum(mu^2 + exp(logvar) - 1 - logvar) (same paper, appendix B). ``num_samples`` draws
several z per input, as importance-weighted autoencoders do (Burda et al. 2016).

The fast backends run one op, ``genfast::gaussian_sample_kl``, which draws eps inside the kernel
from genfast's Philox stream (genfast/ops/philox.py) and regenerates it in the fused backward
instead of storing it. Its randomness enters as an explicit int64[2] (key, offset) tensor drawn
from a torch Generator, so the op is a pure function: opcheck passes and torch.compile traces it.
"""
from __future__ import annotations

import torch

from genfast import _backend, _ext
from genfast.ops._library import eager_call, register_fake_and_autograd

KL_NONE, KL_ELEMENTWISE, KL_SUM = 0, 1, 2
REDUCTIONS = ("none", "sum", "mean", "batchmean")
IMPLEMENTED = ("reference", "cpu", "triton", "cuda")
_INT64_RANGE = (-(2**63), 2**63 - 1)


# ----------------------------------------------------------------------------- reference

def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16 and bfloat16 are computed in float32; the KL is returned in it too."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _z_shape(mu: torch.Tensor, num_samples: int | None) -> tuple[int, ...]:
    return tuple(mu.shape) if num_samples is None else (num_samples, *mu.shape)


def reparameterize_ref(mu, logvar, eps=None, num_samples=None, generator=None):
    """z = mu + exp(logvar / 2) * eps, with eps ~ N(0, I) from torch.randn when not given."""
    acc = _compute_dtype(mu.dtype)
    if eps is None:
        eps = torch.randn(_z_shape(mu, num_samples), generator=generator, device=mu.device,
                          dtype=acc)
    z = mu.to(acc) + torch.exp(0.5 * logvar.to(acc)) * eps.to(acc)
    return z.to(mu.dtype)


def gaussian_kl_ref(mu, logvar, reduction="sum"):
    """KL(N(mu, exp(logvar)) || N(0, I)), elementwise then reduced."""
    mu, logvar = mu.to(_compute_dtype(mu.dtype)), logvar.to(_compute_dtype(logvar.dtype))
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
    return _reduce(kl.sum() if reduction != "none" else kl, reduction, mu)


def reparameterize_kl_ref(mu, logvar, eps=None, num_samples=None, generator=None,
                          reduction="sum"):
    return (reparameterize_ref(mu, logvar, eps, num_samples, generator),
            gaussian_kl_ref(mu, logvar, reduction))


def _reduce(kl_summed_or_elementwise, reduction, mu):
    if reduction == "mean":
        return kl_summed_or_elementwise / mu.numel()
    if reduction == "batchmean":
        return kl_summed_or_elementwise / mu.shape[0]
    return kl_summed_or_elementwise


# ----------------------------------------------------------------------------- the ops

@torch.library.custom_op("genfast::gaussian_sample_kl_triton", mutates_args=())
def _triton_forward(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None,
                    seed: torch.Tensor, num_samples: int, compute_z: bool,
                    kl_mode: int) -> tuple[torch.Tensor, torch.Tensor]:
    """genfast::gaussian_sample_kl on Triton (schema as in csrc/registration.cpp).

    Defined here rather than in C++ so that the Triton backend works without the extension.
    """
    from genfast.kernels import reparam as kernels

    key, offset = seed.tolist()
    return kernels.gaussian_sample_kl(mu, logvar, eps, key, offset, num_samples, compute_z,
                                      kl_mode)


@torch.library.custom_op("genfast::gaussian_sample_kl_triton_backward", mutates_args=())
def _triton_backward(grad_z: torch.Tensor, grad_kl: torch.Tensor, mu: torch.Tensor,
                     logvar: torch.Tensor, eps: torch.Tensor | None, seed: torch.Tensor,
                     num_samples: int, compute_z: bool,
                     kl_mode: int) -> tuple[torch.Tensor, torch.Tensor]:
    from genfast.kernels import reparam as kernels

    key, offset = seed.tolist()
    return kernels.gaussian_sample_kl_backward(grad_z, grad_kl, mu, logvar, eps, key, offset,
                                               num_samples, compute_z, kl_mode)


def _fake_forward(mu, logvar, eps, seed, num_samples, compute_z, kl_mode):
    z = mu.new_empty(_z_shape(mu, num_samples or None)) if compute_z else mu.new_empty(0)
    kl_dtype = _compute_dtype(mu.dtype)
    kl_shape = {KL_SUM: (), KL_ELEMENTWISE: tuple(mu.shape)}.get(kl_mode, (0,))
    return z, mu.new_empty(kl_shape, dtype=kl_dtype)


def _fake_backward(grad_z, grad_kl, mu, logvar, eps, seed, num_samples, compute_z, kl_mode):
    return mu.new_empty(mu.shape), mu.new_empty(mu.shape)


def _setup_context(ctx, inputs, output):
    mu, logvar, eps, seed, num_samples, compute_z, kl_mode = inputs
    ctx.save_for_backward(mu, logvar, eps, seed)
    ctx.num_samples, ctx.compute_z, ctx.kl_mode = num_samples, compute_z, kl_mode


def _make_backward(backward_op):
    def backward(ctx, grad_z, grad_kl):
        mu, logvar, eps, seed = ctx.saved_tensors
        if grad_z is None:
            grad_z = mu.new_zeros(_z_shape(mu, ctx.num_samples or None)) if ctx.compute_z \
                else mu.new_empty(0)
        if grad_kl is None:
            grad_kl = mu.new_zeros(_fake_forward(mu, logvar, eps, seed, ctx.num_samples,
                                                 ctx.compute_z, ctx.kl_mode)[1].shape)
        grad_mu, grad_logvar = backward_op(grad_z, grad_kl, mu, logvar, eps, seed,
                                           ctx.num_samples, ctx.compute_z, ctx.kl_mode)
        grad_eps = None
        if eps is not None and ctx.needs_input_grad[2]:
            grad_eps = grad_z * torch.exp(0.5 * logvar)  # dz/deps = std
        return grad_mu, grad_logvar, grad_eps, None, None, None, None

    return backward


def _register(forward_name: str, backward_name: str) -> None:
    register_fake_and_autograd(forward_name, backward_name, _fake_forward, _fake_backward,
                               _make_backward, _setup_context)


_register("genfast::gaussian_sample_kl_triton", "genfast::gaussian_sample_kl_triton_backward")
_FORWARD_OPS = {"triton": torch.ops.genfast.gaussian_sample_kl_triton}
_CALLS = {"triton": eager_call(torch.ops.genfast.gaussian_sample_kl_triton,
                               torch.ops.genfast.gaussian_sample_kl_triton_backward,
                               _setup_context, _make_backward)}
if _ext.LOAD_ERROR is None:
    _register("genfast::gaussian_sample_kl", "genfast::gaussian_sample_kl_backward")
    _FORWARD_OPS["cpu"] = _FORWARD_OPS["cuda"] = torch.ops.genfast.gaussian_sample_kl
    _CALLS["cpu"] = _CALLS["cuda"] = eager_call(
        torch.ops.genfast.gaussian_sample_kl, torch.ops.genfast.gaussian_sample_kl_backward,
        _setup_context, _make_backward)


# ----------------------------------------------------------------------------- public API

def draw_seed(generator: torch.Generator | None = None, numel: int = 0) -> torch.Tensor:
    """An int64[2] (philox key, counter offset) CPU tensor drawn from ``generator``, for a call
    that draws ``numel`` stream elements.

    Without a generator it comes from torch's default CPU generator, so ``torch.manual_seed``
    makes genfast's sampling repeatable on every device.
    """
    if generator is None:  # the usual case, in one call: the same draw as below
        return torch.randint(*_INT64_RANGE, (2,), dtype=torch.int64)
    if generator.device.type == "cuda" and hasattr(generator, "philox_state"):
        return _reserve_philox(generator, numel)
    seed = torch.randint(*_INT64_RANGE, (2,), generator=generator, device=generator.device,
                         dtype=torch.int64)
    return seed if seed.device.type == "cpu" else seed.cpu()


def _reserve_philox(generator: torch.Generator, numel: int) -> torch.Tensor:
    """The seed pair of a CUDA generator, without device work or a synchronisation.

    A CUDA generator is Philox4x32-10 with its seed and offset on the host. Its philox_state
    reserves counters the way torch's own random kernels do; genfast's stream (philox.py:
    element e takes output e % 4 of counter offset + e // 4, subsequence 0) is theirs, so the
    call draws exactly the reserved values and shares the stream with torch's random ops.
    """
    # Four more values than drawn: an offset that is not a multiple of 4 (set_offset allows
    # one) starts the call at the next whole counter, still inside the reservation.
    seed, offset, intragraph = generator.philox_state(numel + 4)
    if seed.device.type != "cpu":
        raise RuntimeError("genfast: noise from a CUDA generator cannot be drawn during CUDA "
                           "graph capture (the kernels take the seed as host integers); pass "
                           "eps instead")
    start = (offset.item() + intragraph.item()) & ((1 << 64) - 1)
    counter = -(-start // 4)  # < 2**62: a valid int64
    return torch.tensor([seed.item(), counter], dtype=torch.int64)


def _check_args(mu, logvar, eps, num_samples, reduction):
    for name, t in (("mu", mu), ("logvar", logvar)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"genfast: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _backend.FLOAT_DTYPES:
            raise TypeError(f"genfast: {name} must be float16, bfloat16, float32 or float64, "
                            f"got {t.dtype}")
    if mu.shape != logvar.shape:
        raise ValueError(f"genfast: mu and logvar must have the same shape, got "
                         f"{tuple(mu.shape)} and {tuple(logvar.shape)}")
    if mu.dtype != logvar.dtype:
        raise TypeError(f"genfast: mu and logvar must have the same dtype, got {mu.dtype} and "
                        f"{logvar.dtype}")
    if mu.device != logvar.device:
        raise ValueError(f"genfast: mu is on {mu.device} but logvar is on {logvar.device}")
    if num_samples is not None and (isinstance(num_samples, bool)
                                    or not isinstance(num_samples, int) or num_samples < 1):
        raise ValueError(f"genfast: num_samples must be None or an int >= 1, got {num_samples!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"genfast: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if reduction == "batchmean" and mu.dim() == 0:
        raise ValueError("genfast: reduction='batchmean' needs mu with a batch dimension")
    if eps is not None:
        if not isinstance(eps, torch.Tensor):
            raise TypeError(f"genfast: eps must be a torch.Tensor or None, got {type(eps).__name__}")
        if eps.shape != _z_shape(mu, num_samples):
            raise ValueError(f"genfast: eps must have z's shape {_z_shape(mu, num_samples)}, got "
                             f"{tuple(eps.shape)}")
        if eps.dtype != mu.dtype:
            raise TypeError(f"genfast: eps must have mu's dtype {mu.dtype}, got {eps.dtype}")
        if eps.device != mu.device:
            raise ValueError(f"genfast: eps is on {eps.device} but mu is on {mu.device}")


_NO_SEED = torch.zeros(2, dtype=torch.int64)  # stands in when no noise is drawn


def _sample_kl(mu, logvar, eps, num_samples, generator, compute_z, reduction, backend):
    kl_mode = KL_NONE if reduction is None else (KL_ELEMENTWISE if reduction == "none" else KL_SUM)
    _check_args(mu, logvar, eps, num_samples, reduction or "sum")
    name = _backend.select("reparameterize_kl", backend, mu.device, mu.dtype, IMPLEMENTED)
    if name == "reference":
        z = reparameterize_ref(mu, logvar, eps, num_samples, generator) if compute_z else None
        kl = gaussian_kl_ref(mu, logvar, reduction) if kl_mode != KL_NONE else None
        return z, kl
    numel = mu.numel() * (num_samples or 1)
    seed = draw_seed(generator, numel) if compute_z and eps is None else _NO_SEED
    z, kl = _CALLS[name](mu, logvar, eps, seed, num_samples or 0, compute_z, kl_mode)
    return (z if compute_z else None), (_reduce(kl, reduction, mu) if kl_mode != KL_NONE else None)


def reparameterize(mu, logvar, *, eps=None, num_samples=None, generator=None, backend=None):
    """Draws z = mu + exp(logvar / 2) * eps, differentiably in mu and logvar.

    Args:
        mu, logvar: [*] means and log-variances, same shape and float dtype.
        eps: optional [*] (or [num_samples, *]) noise to use instead of drawing it.
        num_samples: None for one z shaped like mu, or S for z of shape [S, *].
        generator: torch.Generator the noise seed is drawn from (default: torch's CPU one).
        backend: 'auto', 'reference', 'cpu', 'triton' or 'cuda' (default: see genfast.backends).
    Returns:
        z with mu's dtype and shape [*] or [S, *].
    """
    return _sample_kl(mu, logvar, eps, num_samples, generator, True, None, backend)[0]


def gaussian_kl(mu, logvar, reduction="sum", *, backend=None):
    """KL(N(mu, exp(logvar)) || N(0, I)).

    reduction: 'none' (elementwise, shaped like mu), 'sum', 'mean' (over all elements) or
    'batchmean' (sum divided by mu.shape[0], the usual VAE loss term). float16 and bfloat16
    inputs give a float32 KL, accumulated in float32.
    """
    return _sample_kl(mu, logvar, None, None, None, False, reduction, backend)[1]


def reparameterize_kl(mu, logvar, *, eps=None, num_samples=None, generator=None,
                      reduction="sum", backend=None):
    """(z, kl) from one fused pass: ``reparameterize`` and ``gaussian_kl`` together."""
    return _sample_kl(mu, logvar, eps, num_samples, generator, True, reduction, backend)
