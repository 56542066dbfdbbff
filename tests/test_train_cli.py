"""``genfast train`` and ``genfast sample``: metrics and checkpoints, exact resume, a 2-process
DDP run on the CPU, PNG grids, and clear errors for bad arguments."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import genfast
from genfast.cli import main
from genfast.data.fashion_mnist import DEBIAN_PACKAGE, FASHION_MNIST_DIR
from genfast.train.checkpoint import load_checkpoint, model_from_checkpoint
from genfast.train.grid import image_grid

TINY_PIXELCNN = ["-p", "channels=8", "-p", "blocks=1", "-p", "head_channels=8"]


def train(out, *extra, model="pixelcnn", epochs=1, limit=3):
    argv = ["train", model, "--out", str(out), "--epochs", str(epochs), "--batch-size", "32",
            "--no-progress", "--device", "cpu"]
    if limit:
        argv += ["--limit-batches", str(limit)]
    if model == "pixelcnn":
        argv += TINY_PIXELCNN
    assert main(argv + list(extra)) == 0
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


def run_two_processes(*args):
    """torchrun --standalone with 2 processes on the CPU; returns the finished run (exit 0)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_train_writes_checkpoint_and_test_metrics(tmp_path, capsys):
    metrics = train(tmp_path, epochs=2)
    printed = capsys.readouterr().out
    assert "epoch 2/2: loss" in printed and "test nll_bits_per_dim" in printed
    test = metrics["test"]
    assert test["nll_bits_per_dim"] == pytest.approx(test["nll_nats"] / (64 * math.log(2)))
    assert [r["epoch"] for r in metrics["history"]] == [1, 2]
    assert metrics["history"][0]["images"] == 3 * 32
    checkpoint = load_checkpoint(str(tmp_path))
    assert checkpoint["model"] == "pixelcnn" and checkpoint["epoch"] == 2
    assert checkpoint["data"] == "digits" and checkpoint["config"]["channels"] == 8
    assert checkpoint["config"]["image_shape"] == (1, 8, 8) and checkpoint["config"]["levels"] == 17
    assert set(checkpoint["optimizers"]) == {"loss"}
    assert checkpoint["metrics"] == test
    model = model_from_checkpoint(checkpoint)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                   checkpoint["state_dict"].values()))


class _RunsCodeWhenUnpickled:
    """What a shared checkpoint could hold: unpickling it calls exec."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    marker = tmp_path / "code_ran"
    torch.save({"model": "pixelcnn", "config": {}, "state_dict": {},
                "history": [_RunsCodeWhenUnpickled(marker)]}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="genfast does not load"):
        load_checkpoint(str(tmp_path))
    for argv in (["sample", str(tmp_path), "--out", str(tmp_path / "grid.png"), "--no-progress"],
                 ["train", "pixelcnn", "--out", str(tmp_path), "--resume", "--no-progress"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and "genfast does not load" in capsys.readouterr().err
    assert not marker.exists()


@pytest.mark.slow  # the evaluation reads all 10,000 test images
@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR),
                    reason=f"{DEBIAN_PACKAGE} is not installed (.ci/run installs it as root on "
                           f"Debian)")
def test_a_short_training_run_on_fashion_mnist(tmp_path):
    metrics = train(tmp_path, "--data", "fashion-mnist", limit=2)
    assert metrics["history"][0]["images"] == 2 * 32
    checkpoint = load_checkpoint(str(tmp_path))
    assert checkpoint["data"] == "fashion-mnist"
    assert checkpoint["config"]["image_shape"] == (1, 28, 28)
    assert checkpoint["config"]["levels"] == 256
    assert math.isfinite(metrics["test"]["nll_bits_per_dim"])


def test_resume_continues_exactly(tmp_path):
    straight = train(tmp_path / "straight", epochs=3)
    train(tmp_path / "resumed", epochs=1)
    resumed = train(tmp_path / "resumed", "--resume", epochs=3)
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in straight["history"]]
    assert resumed["test"] == straight["test"]
    a = load_checkpoint(str(tmp_path / "straight"))
    b = load_checkpoint(str(tmp_path / "resumed"))
    assert a["epoch"] == b["epoch"] == 3
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    adam_a, adam_b = a["optimizers"]["loss"]["state"], b["optimizers"]["loss"]["state"]
    for index in adam_a:
        for name, value in adam_a[index].items():
            assert torch.equal(value, adam_b[index][name]), (index, name)


def test_resume_refuses_another_model(tmp_path, capsys):
    train(tmp_path, epochs=1)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "independent", "--out", str(tmp_path), "--resume", "--no-progress"])
    assert exit_info.value.code == 2
    assert "checkpoint in" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "pixelcnn", "--out", str(tmp_path), "--resume", "--no-progress",
              "-p", "channels=16"])
    assert "keeps the checkpoint's hyperparameters" in capsys.readouterr().err


def test_every_autoregressive_model_trains_from_the_cli(tmp_path):
    for model, params in [("independent", []), ("gated_pixelcnn", ["-p", "channels=8", "-p",
                                                                    "layers=2", "-p",
                                                                    "num_classes=10"]),
                          ("pixelrnn", ["-p", "layer=diagonal", "-p", "hidden=4", "-p",
                                        "layers=1"])]:
        metrics = train(tmp_path / model, *params, model=model, limit=2)
        assert 0 < metrics["test"]["nll_bits_per_dim"] < math.log2(17) + 1


@pytest.mark.slow
def test_two_process_ddp_follows_the_one_process_run(tmp_path):
    """Two processes take the halves of each global batch and DDP averages their gradients, so
    after an epoch of real updates they log the same loss and reach the same test NLL as one
    process (up to the order of floating-point sums)."""
    one = train(tmp_path / "one", "--lr", "0.01", limit=None)
    done = run_two_processes("-m", "genfast", "train", "pixelcnn", "--out", str(tmp_path / "two"),
                             "--epochs", "1", "--batch-size", "32", "--lr", "0.01",
                             "--no-progress", "--device", "cpu", *TINY_PIXELCNN)
    assert "2 process(es)" in done.stdout
    with open(tmp_path / "two" / "metrics.json") as f:
        two = json.load(f)
    assert two["world_size"] == 2
    assert two["history"][0]["images"] == one["history"][0]["images"] == 1500
    assert two["history"][0]["loss"]["loss"] == pytest.approx(one["history"][0]["loss"]["loss"],
                                                              rel=1e-5)
    assert two["test"]["nll_nats"] == pytest.approx(one["test"]["nll_nats"], rel=1e-5)
    untrained = train(tmp_path / "untrained", "--lr", "0", limit=None)
    assert one["test"]["nll_nats"] < untrained["test"]["nll_nats"] - 1.0
    assert load_checkpoint(str(tmp_path / "two"))["epoch"] == 1


TEARDOWN_SCRIPT = """
import os
import sys
import torch
from genfast.train import distributed

info = distributed.launched_info()
distributed.setup(info, torch.device("cpu"))
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 3))
model(torch.randn(2, 4)).sum().backward()
del model
distributed.teardown(info)
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
with open(os.path.join(sys.argv[1], f"rank{info.rank}.txt"), "w") as f:
    f.write(" ".join(sorted(n for n in names if "gloo" in n)))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="lists threads through /proc")
@pytest.mark.slow
def test_teardown_joins_the_process_groups_threads(tmp_path):
    """After a DDP step, teardown frees the gloo process group, so its threads do not run into
    interpreter exit (where one aborted a worker in CI)."""
    script = tmp_path / "teardown.py"
    script.write_text(TEARDOWN_SCRIPT)
    run_two_processes(str(script), str(tmp_path))
    # Each rank lists the gloo threads it still has: none.
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == ["", ""]


def test_sample_writes_a_grid_of_the_right_size(tmp_path, capsys):
    train(tmp_path, limit=1)
    grid = tmp_path / "grid.png"
    assert main(["sample", str(tmp_path / "checkpoint.pt"), "--n", "10", "--out", str(grid)]) == 0
    assert "10 images" in capsys.readouterr().out
    from PIL import Image

    picture = Image.open(grid)
    # 10 images: 4 per row, 3 rows; 8x8 digits upscaled 4x to 32, 2-pixel gaps.
    assert picture.size == (4 * 34 + 2, 3 * 34 + 2) and picture.mode == "L"
    values = set(np.unique(np.asarray(picture)).tolist())
    assert values <= {round(v * 255 / 16) for v in range(17)}


@pytest.mark.skipif(not genfast.backends()["cpu"].available,
                    reason="cached and naive samples agree to the bit on the cpu backend only")
def test_sample_draws_the_same_grid_cached_and_naive(tmp_path):
    from PIL import Image

    train(tmp_path, limit=1)
    grids = []
    for method in ("cached", "naive"):
        grid = tmp_path / f"{method}.png"
        assert main(["sample", str(tmp_path / "checkpoint.pt"), "--n", "6", "--out", str(grid),
                     "--method", method, "--no-progress", "--seed", "3"]) == 0
        grids.append(np.asarray(Image.open(grid)))
    assert np.array_equal(*grids)


def test_image_grid_layout_and_scaling():
    images = torch.tensor([[[[0, 1], [2, 3]]] * 3, [[[3, 3], [3, 3]]] * 3])  # [2, 3, 2, 2]
    grid = image_grid(images, levels=4, nrow=2, scale=2, padding=1)
    assert grid.shape == (1 * (4 + 1) + 1, 2 * (4 + 1) + 1, 3) and grid.dtype == np.uint8
    assert grid[0].max() == 0  # the padding row
    assert grid[1:3, 1:3].tolist() == [[[0] * 3] * 2] * 2
    assert grid[3, 3].tolist() == [255] * 3 and grid[1, 3].tolist() == [85] * 3
    with pytest.raises(ValueError, match="1 or 3"):
        image_grid(torch.zeros(2, 2, 4, 4), levels=4)


@pytest.mark.parametrize("argv, message", [
    (["train", "pixelcnn++"], "unknown model 'pixelcnn++'"),
    (["train", "pixelcnn", "--data", "mnist"], "unknown dataset 'mnist'"),
    (["train", "pixelcnn", "-p", "channels=7"], "multiple of 2"),
    (["train", "pixelcnn", "-p", "colour=red"], "bad model hyperparameter"),
    (["train", "pixelcnn", "-p", "image_shape=(1,4,4)"], "come from the data"),
    (["train", "pixelcnn", "-p", "nonsense"], "KEY=VALUE"),
    (["train", "pixelcnn", "--batch-size", "0"], "--batch-size"),
    (["train", "gated_pixelcnn", "--data", "NPZ", "-p", "num_classes=10"], "has no labels"),
    (["sample", "NOWHERE"], "no checkpoint"),
])
def test_bad_arguments_give_clear_errors(tmp_path, capsys, argv, message):
    npz = tmp_path / "unlabelled.npz"
    np.savez(npz, images=np.zeros((10, 4, 4), np.uint8))
    argv = [str(npz) if a == "NPZ" else str(tmp_path / "none") if a == "NOWHERE" else a
            for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(argv + (["--out", str(tmp_path / "run"), "--no-progress"]
                     if argv[0] == "train" else []))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_wrong_image_size_for_an_rgb_model(tmp_path, capsys):
    npz = tmp_path / "rgb.npz"
    np.savez(npz, images=np.zeros((10, 4, 4, 3), np.uint8))
    with pytest.raises(SystemExit):
        main(["train", "pixelrnn", "--data", str(npz), "-p", "hidden=16", "--out",
              str(tmp_path / "run"), "--no-progress"])
    assert "multiple of 3" in capsys.readouterr().err


def test_python_dash_m_genfast_lists_the_commands():
    done = subprocess.run([sys.executable, "-m", "genfast", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0
    assert "train" in done.stdout and "sample" in done.stdout
