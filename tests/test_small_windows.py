"""Bit-identity of one-pixel windows and short rows with the full maps they are cut from.

A cached sampler computes each new pixel of a layer from a small crop of its input (a one-pixel
`window` of masked_conv2d, a one-row, few-column lstm_rows call), while naive sampling reruns the
layer on the whole map; the two must give the same samples, so every output element must have
the same bits either way: same summation order, same SIMD maths, whatever the tiling or batch.
Inputs are random (zeros would hide differences in summation order).
"""
import zlib

import pytest
import torch

import genfast
from genfast.ops.lstm_row import IMPLEMENTED as LSTM_IMPLEMENTED
from genfast.ops.masked_conv import IMPLEMENTED as CONV_IMPLEMENTED
from genfast.ops.masked_conv import masked_conv2d_on_windows

# The reference is plain PyTorch, whose kernels pick their algorithm by shape (oneDNN or
# im2col + BLAS convolutions by dtype, batch and kernel size; vectorised sigmoid and tanh with a
# scalar tail): its crops match its full maps to rounding, not always to the bit. So only the
# fast backend is held to the bit, and a sampler that checks cached against naive samples bit
# for bit needs it.
BACKENDS = ["cpu", "reference"]
# x's layout as well for the cpu backend (its 1 x 1 forward reads NCHW maps in place and gathers
# the others); the reference's layouts are torch's business.
BACKEND_LAYOUTS = [pytest.param("cpu", False, id="cpu-nchw"),
                   pytest.param("cpu", True, id="cpu-channels_last"),
                   pytest.param("reference", False, id="reference-nchw")]
DTYPES = [torch.float32, torch.float64]


def _seed(*key):
    torch.manual_seed(zlib.crc32(repr(key).encode()))


def _assert_equal(actual, expected, where, backend="cpu"):
    """torch.equal for the fast backend (reporting how far apart the values are), the dtype's
    rounding for the reference."""
    if backend == "reference":
        tolerance = 1e-12 if actual.dtype == torch.float64 else 1e-5
        torch.testing.assert_close(actual, expected, rtol=tolerance, atol=tolerance, msg=where)
    elif not torch.equal(actual, expected):
        diff = (actual - expected).abs().max().item()
        raise AssertionError(f"{where}: not bit-identical, max difference {diff:.3g}")


def _skip_unavailable(name, implemented):
    if name not in implemented:
        pytest.skip(f"no {name} backend in this build")
    info = genfast.backends()[name]
    if not info.available:
        pytest.skip(f"{name} unavailable: {info.reason}")


# ----------------------------------------------------------------------------- masked_conv2d

KERNELS = [(1, 1), (3, 3), (7, 7), (1, 3)]  # (kh, kw)
# (in, out) channels: off multiples of 8; 70 outputs take more than four SIMD vectors.
CHANNELS = [(5, 13), (19, 70)]
# Non-square, with 90 pixels: the 1 x 1 forward's pixel vectors (16 floats) end in a partial one.
IMAGE = (9, 10)


def _positions(h, w):
    """Corners, edges and the interior."""
    return sorted({(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (0, w // 2), (h // 2, 0),
                   (h // 2, w // 2), (h - 1, w // 2 + 1), (h // 2 + 1, w - 1)})


@pytest.mark.parametrize("backend,channels_last", BACKEND_LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels", CHANNELS, ids=str)
@pytest.mark.parametrize("kernel", KERNELS, ids=str)
@pytest.mark.parametrize("mask_type", ["A", "B", "V"])
@pytest.mark.parametrize("data_channels", [1, 3])
@pytest.mark.parametrize("batch", [1, 16])
def test_masked_conv_pixel_window(backend, channels_last, dtype, channels, kernel, mask_type,
                                  data_channels, batch):
    """Each pixel of the full map, from a one-pixel window on its crop and on the full map."""
    _skip_unavailable(backend, CONV_IMPLEMENTED)
    _seed("pixel", dtype, channels, kernel, mask_type, data_channels, batch)
    (cin, cout), (kh, kw), (h, w) = channels, kernel, IMAGE
    cy, cx = (kh - 1) // 2, (kw - 1) // 2
    x = torch.randn(batch, cin, h, w, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight = torch.randn(cout, cin, kh, kw, dtype=dtype) / (cin * kh * kw) ** 0.5
    bias = torch.randn(cout, dtype=dtype)
    args = dict(mask_type=mask_type, data_channels=data_channels, backend=backend)
    with torch.no_grad():
        full = genfast.masked_conv2d(x, weight, bias, **args)
        for i, j in _positions(h, w):
            # The crop a sampler passes: the rows and columns the visible taps reach, as a view.
            r0, c0 = max(0, i - cy), max(0, j - cx)
            crop = x[:, :, r0:i + 1, c0:min(w, j + kw - cx)]
            window = (i - r0, i - r0 + 1, j - c0, j - c0 + 1)
            on_crop = genfast.masked_conv2d(crop, weight, bias, window=window, **args)
            on_full = genfast.masked_conv2d(x, weight, bias, window=(i, i + 1, j, j + 1), **args)
            expected = full[:, :, i:i + 1, j:j + 1]
            _assert_equal(on_crop, expected, f"crop window at {(i, j)}", backend)
            _assert_equal(on_full, expected, f"full-map window at {(i, j)}", backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel,mask_type", [((7, 7), "A"), ((3, 3), "B"), ((1, 1), "B")],
                         ids=str)
def test_masked_conv_sampler_sized(backend, kernel, mask_type):
    """A sampler's shapes: batch 16, 32 channels, 28 x 28, every pixel of two rows."""
    _skip_unavailable(backend, CONV_IMPLEMENTED)
    _seed("sampler", kernel, mask_type)
    (kh, kw), cin = kernel, 3 if mask_type == "A" else 32
    cy, cx = (kh - 1) // 2, (kw - 1) // 2
    x = torch.randn(16, cin, 28, 28)
    weight = torch.randn(32, cin, kh, kw) / (cin * kh * kw) ** 0.5
    bias = torch.randn(32)
    args = dict(mask_type=mask_type, data_channels=3, backend=backend)
    with torch.no_grad():
        full = genfast.masked_conv2d(x, weight, bias, **args)
        for i in (0, 17):
            for j in range(28):
                r0, c0 = max(0, i - cy), max(0, j - cx)
                crop = x[:, :, r0:i + 1, c0:min(28, j + kw - cx)]
                window = (i - r0, i - r0 + 1, j - c0, j - c0 + 1)
                pixel = genfast.masked_conv2d(crop, weight, bias, window=window, **args)
                _assert_equal(pixel, full[:, :, i:i + 1, j:j + 1], f"pixel {(i, j)}", backend)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("channels", CHANNELS, ids=str)
@pytest.mark.parametrize("kernel,mask_type,data_channels,dilation",
                         [((3, 3), "B", 1, 1), ((7, 7), "A", 3, 1), ((3, 3), "A", 3, 2),
                          ((1, 3), "V", 1, 1), ((1, 1), "B", 3, 1)], ids=str)
def test_prepacked_windows_match_the_full_map(channels_last, dtype, channels, kernel, mask_type,
                                              data_channels, dilation):
    """The cpu backend's window evaluator packs the weight once under inference_mode
    (masked_conv2d_pack_weight + masked_conv2d_prepacked): still the full map's bits."""
    _skip_unavailable("cpu", CONV_IMPLEMENTED)
    _seed("prepacked", dtype, channels, kernel, mask_type, data_channels, dilation)
    (cin, cout), (kh, kw), (h, w) = channels, kernel, IMAGE
    x = torch.randn(3, cin, h, w).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight = (torch.randn(cout, cin, kh, kw) / (cin * kh * kw) ** 0.5).to(dtype)
    bias = torch.randn(cout).to(dtype)
    args = (bias, mask_type, data_channels, dilation)
    with torch.inference_mode():
        full = genfast.masked_conv2d(x, weight, *args, backend="cpu")
        conv = masked_conv2d_on_windows(x, weight, *args, backend="cpu")
        for i, j in _positions(h, w):
            _assert_equal(conv(x, [i, i + 1, j, j + 1]), full[:, :, i:i + 1, j:j + 1],
                          f"prepacked window at {(i, j)}")
        _assert_equal(conv(x, []), full, "prepacked full map")


def test_prepacked_windows_follow_in_place_weight_changes():
    """An optimiser step (an in-place change) between calls re-packs; a stale copy would be a
    silently wrong answer."""
    _skip_unavailable("cpu", CONV_IMPLEMENTED)
    _seed("prepacked-version")
    x = torch.randn(2, 6, 5, 5)
    weight = torch.randn(8, 6, 3, 3)
    conv = masked_conv2d_on_windows(x, weight, None, "B", backend="cpu")
    with torch.inference_mode():
        before = conv(x, [2, 3, 2, 3])
    with torch.no_grad():
        weight.mul_(-2.0)
    with torch.inference_mode():
        after = conv(x, [2, 3, 2, 3])
        expected = genfast.masked_conv2d(x, weight, None, "B", window=(2, 3, 2, 3), backend="cpu")
    _assert_equal(after, expected, "after the in-place change")
    assert not torch.equal(after, before)


def test_prepacked_ops_opcheck_and_bad_packing():
    """The two inference ops: schema, fake shapes (the packed size in Python) and a clear error
    for a packed weight that does not belong to the call."""
    _skip_unavailable("cpu", CONV_IMPLEMENTED)
    _seed("prepacked-opcheck")
    ops = torch.ops.genfast
    for (cin, cout, k, code, groups, dtype) in ((5, 13, 3, 1, 1, torch.float32),
                                                (6, 70, 7, 0, 3, torch.float64),
                                                (4, 9, 3, 2, 1, torch.float32),
                                                (3, 3, 3, 0, 1, torch.float32)):
        x = torch.randn(2, cin, 6, 7, dtype=dtype)
        weight = torch.randn(cout, cin, k, k, dtype=dtype)
        bias = torch.randn(cout, dtype=dtype)
        pack_args = (x, weight, code, groups, 1)
        torch.library.opcheck(ops.masked_conv2d_pack_weight, pack_args)
        packed = ops.masked_conv2d_pack_weight(*pack_args)
        for window in ([], [1, 3, 2, 5]):
            call = (x, packed, weight, bias, code, groups, 1, window)
            torch.library.opcheck(ops.masked_conv2d_prepacked, call)
            _assert_equal(ops.masked_conv2d_prepacked(*call),
                          ops.masked_conv2d(x, weight, bias, code, groups, 1, window),
                          f"prepacked {(cin, cout, k, code, groups)} window {window}")
    with pytest.raises(RuntimeError, match="masked_conv2d_pack_weight"):
        ops.masked_conv2d_prepacked(x, packed[:-1], weight, bias, 0, 1, 1, [])
    with pytest.raises(RuntimeError, match="masked_conv2d_pack_weight"):
        ops.masked_conv2d_prepacked(x, packed.double(), weight, bias, 0, 1, 1, [])


# ----------------------------------------------------------------------------- lstm_rows

# (hidden, rows, length): hidden sizes off multiples of 8, rows shorter and longer than a SIMD
# vector (the cell maths takes another path for each).
LSTM_SHAPES = [(5, 3, 7), (13, 2, 20), (32, 2, 28)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", LSTM_SHAPES, ids=str)
@pytest.mark.parametrize("k,pad_left", [(3, 1), (2, 1)], ids=str)
@pytest.mark.parametrize("batch", [1, 16])
def test_lstm_rows_short_row(backend, dtype, shape, k, pad_left, batch):
    """Row r's h and c at column j, from one row of the few columns its taps reach."""
    _skip_unavailable(backend, LSTM_IMPLEMENTED)
    _seed("lstm", dtype, shape, k, pad_left, batch)
    hidden, rows, length = shape
    gates_in = torch.randn(batch, 4 * hidden, rows, length, dtype=dtype)
    weight = torch.randn(4 * hidden, hidden, k, dtype=dtype) / (hidden * k) ** 0.5
    bias = 0.5 * torch.randn(4 * hidden, dtype=dtype)
    h0 = torch.randn(batch, hidden, length, dtype=dtype).tanh()
    c0 = torch.randn(batch, hidden, length, dtype=dtype)
    with torch.no_grad():
        h, c = genfast.lstm_rows(gates_in, weight, bias, h0, c0, pad_left, backend=backend)
        for r in range(rows):
            h_prev = h0 if r == 0 else h[:, :, r - 1]
            c_prev = c0 if r == 0 else c[:, :, r - 1]
            for j in range(length):
                lo, hi = max(0, j - pad_left), min(length, j - pad_left + k)
                # Only column j's gates matter for column j: the others are zero, as a sampler
                # that has not drawn them yet would pass.
                row = torch.zeros(batch, 4 * hidden, 1, hi - lo, dtype=dtype)
                row[:, :, 0, j - lo] = gates_in[:, :, r, j]
                h1, c1 = genfast.lstm_rows(row, weight, bias, h_prev[:, :, lo:hi],
                                           c_prev[:, :, lo:hi], pad_left, backend=backend)
                _assert_equal(h1[:, :, 0, j - lo], h[:, :, r, j], f"h at row {r}, col {j}", backend)
                _assert_equal(c1[:, :, 0, j - lo], c[:, :, r, j], f"c at row {r}, col {j}", backend)
