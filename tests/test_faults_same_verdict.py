"""``train --dry-run`` and ``train`` give every config the same verdict.

The dry-run builds the nets without data (Input layers stand in for the Data layers),
so every rule about what a config may say lives in the validator both run, not in a
layer's setup that only the real build reaches. Each case below was once accepted by
one and refused by the other (or refused with a traceback): both must now refuse it
with the same one ``error:`` line and exit code, and a sound config trains under both.
"""
from __future__ import annotations

import numpy as np
import pytest

import fault_figures
from test_cli_e2e import CONFIG, write_cifar10_binary
from tool_helpers import run

BASE = (CONFIG.replace("max_iter: 12", "max_iter: 2").replace("test_interval: 6", "test_interval: 0")
        .replace("snapshot: 6", "snapshot: 0"))
CONV = "convolution_param: {num_output: 4, kernel_size: 3, stride: 2, pad: 1}"
TRAIN_TRANSFORM = "transform_param: {mean_image: true, scale: 0.01, mirror: true, shift: 2}"
LOSS = "type: SoftmaxWithLoss\n      bottom: [ip, label]"


def edit(*pairs: tuple[str, str]) -> str:
    text = BASE
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new)
    return text


CASES = {
    # (config text, expected exit code, words of the error line; code 0: both accept)
    "sound": (BASE, 0, ()),
    "uniform-min-above-max": (edit((CONV, CONV[:-1] + ", weight_filler: {type: uniform, "
                                           "min: 1, max: -1}}")), 2, ("weight_filler.min",)),
    "inv-negative-gamma": (edit(("lr_policy: step", "lr_policy: inv\n  power: 0.75"),
                                ("gamma: 0.5", "gamma: -0.5")), 2, ("solver.gamma",)),
    "step-negative-gamma": (edit(("gamma: 0.5", "gamma: -0.5")), 2, ("solver.gamma",)),
    "exp-rate-overflows": (edit(("lr_policy: step", "lr_policy: exp"),
                                ("gamma: 0.5", "gamma: 1.0e+200"), ("  stepsize: 5\n", ""),
                                ("max_iter: 2", "max_iter: 3")), 2, ("solver.lr_policy",)),
    "poly-negative-power": (edit(("lr_policy: step", "lr_policy: poly\n  power: -1"),
                                 ("  gamma: 0.5\n", ""), ("  stepsize: 5\n", "")), 2,
                            ("solver.power",)),
    "mean-value-2-of-3": (edit((TRAIN_TRANSFORM, "transform_param: {mean_value: [1, 2]}")), 2,
                          ("transform_param.mean_value", "1 or 3")),
    "mean-value-beyond-float32": (edit((TRAIN_TRANSFORM, "transform_param: {mean_value: 1e39}")),
                                  2, ("transform_param.mean_value",)),
    "hdf5-without-dataset": (edit(("data_param: {dataset: cifar10, batch_size: 8}",
                                   "data_param: {hdf5: t.h5, batch_size: 8}")), 2,
                             ("data_param.dataset",)),
    "integer-of-5000-digits": (edit(("max_iter: 2", "max_iter: " + "9" * 5000)), 2,
                               ("too many digits",)),
    "float-of-5000-digits": (edit(("base_lr: 0.05", "base_lr: " + "9" * 5000 + ".5")), 2,
                             ("base_lr",)),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_cifar10_binary(tmp_path_factory.mktemp("verdict") / "data")


def verdict(result) -> tuple[int, str]:
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        fault_figures.add("tracebacks")
        raise AssertionError(repr(result.exception)) from result.exception
    lines = result.stderr.splitlines()
    if result.exit_code == 0:
        return 0, ""
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return result.exit_code, lines[0]


def both(config, data, runs):
    dry = verdict(run("train", config, "--dry-run"))
    real = verdict(run("train", config, "--data-dir", data, "--runs-dir", runs, "--no-progress"))
    return dry, real


@pytest.mark.parametrize("case", sorted(CASES))
def test_dry_run_and_train_give_the_same_verdict(tmp_path, data, case):
    text, code, words = CASES[case]
    config = tmp_path / "c.yaml"
    config.write_text(text)
    dry, real = both(config, data, tmp_path / "runs")
    assert dry == real, (dry, real)
    assert dry[0] == code, dry
    for word in words:
        assert word in dry[1], (word, dry[1])
    fault_figures.add("same_verdict")


def write_npy_header(path, shape, payload: bytes = b"\0" * 64) -> None:
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.write(payload)


@pytest.mark.parametrize("shape", [(100_000, 100_000), (10, 10)], ids=["37GiB", "truncated"])
def test_an_infogain_matrix_claiming_huge_sizes_is_refused_before_allocating(
        tmp_path, data, shape):
    h = tmp_path / "h.npy"
    write_npy_header(h, shape)
    config = tmp_path / "c.yaml"
    config.write_text(BASE.replace(LOSS, "type: InfogainLoss\n      bottom: [ip, label]\n"
                                         f"      infogain_loss_param: {{source: '{h}'}}"))
    dry, real = both(config, data, tmp_path / "runs")
    assert dry == real and dry[0] == 2, (dry, real)
    assert "infogain_loss_param.source" in dry[1] and "h.npy" in dry[1], dry
    fault_figures.add("same_verdict")
