"""End to end through the CLI on a tiny generated CIFAR-10 (binary format):
train → snapshot → test → resume, and one-line errors."""
import csv
import textwrap

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from cnntrain.cli import main

CONFIG = """\
name: tiny
net:
  name: tiny
  layer:
    - name: cifar
      type: Data
      top: [data, label]
      include: {phase: TRAIN}
      data_param: {dataset: cifar10, batch_size: 8}
      transform_param: {mean_image: true, scale: 0.01, mirror: true, shift: 2}
    - name: cifar
      type: Data
      top: [data, label]
      include: {phase: TEST}
      data_param: {dataset: cifar10, split: test, batch_size: 10}
      transform_param: {mean_image: true, scale: 0.01}
    - name: conv1
      type: Convolution
      bottom: data
      top: conv1
      convolution_param: {num_output: 4, kernel_size: 3, stride: 2, pad: 1}
    - name: pool1
      type: Pooling
      bottom: conv1
      top: pool1
      pooling_param: {pool: MAX, kernel_size: 3, stride: 2}
    - name: relu1
      type: ReLU
      bottom: pool1
      top: pool1
    - name: drop
      type: Dropout
      bottom: pool1
      top: pool1
    - name: ip
      type: InnerProduct
      bottom: pool1
      top: ip
      inner_product_param: {num_output: 10}
    - name: accuracy
      type: Accuracy
      bottom: [ip, label]
      top: accuracy
      include: {phase: TEST}
    - name: loss
      type: SoftmaxWithLoss
      bottom: [ip, label]
      top: loss
solver:
  base_lr: 0.05
  momentum: 0.9
  weight_decay: 0.001
  lr_policy: step
  gamma: 0.5
  stepsize: 5
  max_iter: 12
  display: 1
  test_interval: 6
  snapshot: 6
  random_seed: 3
"""


def write_cifar10_binary(root, n_train=40, n_test=25, seed=0):
    """Official binary layout: records of 1 label byte + 3072 pixel bytes (R, G, B planes)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)

    def records(n):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        # Pictures that depend on the label, so a net can learn something.
        pixels = (rng.integers(0, 100, (n, 3072)) + labels[:, None] * 15).astype(np.uint8)
        return np.concatenate([labels[:, None], pixels], axis=1).tobytes()

    per_batch = n_train // 5
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(records(per_batch))
    (folder / "test_batch.bin").write_bytes(records(n_test))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    (folder / "batches.meta.txt").write_text("\n".join(names) + "\n")
    return root


@pytest.fixture
def setup(tmp_path):
    data = write_cifar10_binary(tmp_path / "data")
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    return tmp_path, data, config


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def metrics(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def weights(path):
    with h5py.File(path) as f:
        return {f"{layer}/{i}": f["data"][layer][i][()] for layer in f["data"]
                for i in f["data"][layer]}


def assert_same_weights(a, b) -> dict:
    """Snapshots ``a`` and ``b`` hold the same parameters, bit for bit (the check of
    every "resumed ends like uninterrupted" test); returns ``a``'s."""
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        np.testing.assert_array_equal(wb[key], wa[key], err_msg=key)
    return wa


def train_losses(run_dir) -> dict[str, str]:
    """A run's training losses by iteration, as metrics.csv holds them."""
    return {r["iter"]: r["loss"] for r in metrics(run_dir) if r["loss"]}


def test_train_test_and_resume_exactly(setup):
    tmp, data, config = setup
    full = run("train", config, "--data-dir", data, "--runs-dir", tmp / "a", "--no-progress")
    assert full.exit_code == 0, full.output
    run_a = tmp / "a" / "tiny"
    assert sorted(p.name for p in (run_a / "snapshots").iterdir()) == ["iter_12.h5", "iter_6.h5"]
    assert (run_a / "config.yaml").is_file() and "iter 12" in (run_a / "train.log").read_text()
    rows = metrics(run_a)
    losses_a = train_losses(run_a)
    assert len(losses_a) == 12
    final_acc = [r["test_accuracy"] for r in rows if r["test_accuracy"]][-1]

    tested = run("test", "--snapshot", run_a / "snapshots" / "iter_12.h5", "--data-dir", data)
    assert tested.exit_code == 0, tested.output
    assert "tested 25 images" in tested.output
    assert tested.output.count("loss: ") == 1          # the net's loss output, once
    shown = float(tested.output.split("accuracy: ")[1].split()[0])
    assert shown == pytest.approx(float(final_acc), abs=1e-4)
    assert "per-class accuracy" in tested.output and "airplane" in tested.output

    resumed = run("train", config, "--data-dir", data, "--runs-dir", tmp / "b", "--no-progress",
                  "--resume", run_a / "snapshots" / "iter_6.h5")
    assert resumed.exit_code == 0, resumed.output
    run_b = tmp / "b" / "tiny"
    losses_b = train_losses(run_b)
    assert sorted(losses_b, key=int) == [str(i) for i in range(7, 13)]
    for it, loss in losses_b.items():
        assert loss == losses_a[it]
    assert_same_weights(run_a / "snapshots" / "iter_12.h5", run_b / "snapshots" / "iter_12.h5")


def test_same_seed_same_run_other_seed_differs(setup):
    tmp, data, config = setup
    finals = []
    for name, seed in (("x", 3), ("y", 3), ("z", 4)):
        cfg = tmp / f"{name}.yaml"
        cfg.write_text(CONFIG.replace("random_seed: 3", f"random_seed: {seed}")
                       .replace("name: tiny\nnet", f"name: {name}\nnet"))
        assert run("train", cfg, "--data-dir", data, "--runs-dir", tmp / "r",
                   "--no-progress").exit_code == 0
        finals.append(weights(tmp / "r" / name / "snapshots" / "iter_12.h5")["ip/0"])
    np.testing.assert_array_equal(finals[0], finals[1])
    assert not np.array_equal(finals[0], finals[2])


def test_weights_fine_tunes_and_resume_refuses_wrong_files(setup):
    tmp, data, config = setup
    assert run("train", config, "--data-dir", data, "--runs-dir", tmp / "a",
               "--no-progress").exit_code == 0
    snap = tmp / "a" / "tiny" / "snapshots" / "iter_12.h5"
    tuned = run("train", config, "--data-dir", data, "--runs-dir", tmp / "ft", "--no-progress",
                "--weights", snap)
    assert tuned.exit_code == 0 and "initialized 2 layer(s)" in tuned.output
    caffe = tmp / "weights_only.h5"
    with h5py.File(caffe, "w") as f:
        f["data/ip/0"] = np.zeros((10, 4 * 4 * 4), np.float32)
    refused = run("train", config, "--data-dir", data, "--runs-dir", tmp / "c", "--no-progress",
                  "--resume", caffe)
    assert refused.exit_code == 4 and "use --weights" in refused.output


@pytest.mark.parametrize("edit, code, words", [
    (("type: Pooling", "type: Poolling"), 2, "unknown layer type 'Poolling'"),
    (("bottom: pool1\n      top: ip", "bottom: pool9\n      top: ip"), 2, "'pool9' is not produced"),
    (("num_output: 10}", "num_output: 10, axis: 7}"), 2, "axis 7 is out of range"),
    (("base_lr: 0.05", "base_lr: fast"), 2, "must be a number"),
])
def test_config_errors_are_one_line_without_traceback(setup, edit, code, words):
    tmp, data, config = setup
    config.write_text(CONFIG.replace(*edit))
    result = run("train", config, "--data-dir", data, "--runs-dir", tmp / "e", "--no-progress")
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and str(config) in lines[0]
    assert "Traceback" not in result.output


def test_missing_dataset_and_snapshot_are_one_line_errors(setup, monkeypatch):
    import urllib.error

    import cnntrain.data.download

    tmp, _, config = setup

    def offline(*a, **k):
        raise urllib.error.URLError(OSError("network is unreachable"))

    monkeypatch.setattr(cnntrain.data.download, "urlopen", offline)
    result = run("train", config, "--data-dir", tmp / "empty", "--runs-dir", tmp / "e",
                 "--no-progress")
    assert result.exit_code == 3
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.output.strip().endswith(errors[0]), result.output
    assert "network is unreachable" in errors[0] and "--data-dir" in errors[0]
    assert f"{config}: layer 'cifar'" in errors[0]
    assert "Traceback" not in result.output
    missing = run("test", "--snapshot", tmp / "nope.h5")
    assert missing.exit_code == 4 and "not found" in missing.output
