"""Cutout / random erasing, random resized crop, mixup and CutMix: their statistics,
the mixed-target loss (exact, gradient-checked), the TRAIN-only rule, exact resume."""
import math

import numpy as np
import pytest

from cnntrain.config import parse_layer
from cnntrain.config.validate import parse_net
from cnntrain.data.augment import Erase, Mix, ResizedCrop, resize_boxes, sample_boxes
from cnntrain.errors import ConfigError
from layer_helpers import assert_gradients, make_layer
from test_cli_e2e import CONFIG, assert_same_weights, run, train_losses, write_cifar10_binary

RNG = np.random.default_rng(11)


# --- random erasing and Cutout -----------------------------------------------------------
def test_random_erasing_area_and_fill():
    n, h, w = 4000, 40, 40
    x = RNG.standard_normal((n, 1, h, w))
    erase = Erase(prob=0.6, scale=(0.1, 0.3), ratio=(0.5, 2.0), value=-7.0)
    out = erase(x, np.random.default_rng(1))
    gone = out == -7.0
    kept = ~gone
    np.testing.assert_array_equal(out[kept], x[kept])           # the rest is untouched
    fraction = gone.mean(axis=(1, 2, 3))
    erased = fraction > 0
    # Each image is erased with probability 0.6 (a 10-try box of at most 0.3 of the
    # area at ratio <= 2 always fits in a square image).
    assert erased.mean() == pytest.approx(0.6, abs=0.03)
    # The area share is uniform in [0.1, 0.3] (up to rounding of the box sides).
    assert fraction[erased].mean() == pytest.approx(0.2, abs=0.01)
    assert fraction[erased].min() >= 0.08 and fraction[erased].max() <= 0.32
    # And each erased region is one box.
    for i in np.flatnonzero(erased)[:50]:
        ys, xs = np.nonzero(gone[i, 0])
        assert len(ys) == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)


def test_cutout_square_clipped_at_the_edges():
    n, h, size = 3000, 12, 6
    x = np.ones((n, 3, h, h))
    out = Erase(prob=1.0, size=size)(x, np.random.default_rng(2))
    gone = (out == 0).all(axis=1)
    assert (out == 0).any(axis=1).sum() == gone.sum()           # every channel alike
    # Centre uniform over the 12 rows: the clipped side is 6 for 7 of them
    # (rows 3..8 reach no edge... plus the one flush with the bottom), 3..5 elsewhere.
    sides = [min(c - size // 2 + size, h) - max(c - size // 2, 0) for c in range(h)]
    expected = (np.mean(sides) ** 2) / h ** 2
    assert gone.mean() == pytest.approx(expected, rel=0.03)
    assert gone.sum(axis=(1, 2)).max() == size * size


def test_random_noise_fill():
    x = np.zeros((500, 3, 16, 16))
    out = Erase(prob=1.0, size=8, fill="random")(x, np.random.default_rng(3))
    noise = out[out != 0]
    assert noise.size > 500 * 3 * 16
    assert noise.mean() == pytest.approx(0.0, abs=0.02) and noise.std() == pytest.approx(1.0, abs=0.02)


# --- random resized crop ------------------------------------------------------------------
def test_resized_crop_boxes_follow_the_scale_and_ratio_ranges():
    n, h, w = 20000, 200, 200
    top, left, bh, bw, found = sample_boxes(np.random.default_rng(4), n, h, w,
                                            (0.25, 0.7), (0.75, 4 / 3))
    assert found.all()      # every first try fits: the widest box is sqrt(0.7 * 4/3) < 1
    area = bh * bw / (h * w)
    assert area.mean() == pytest.approx(0.475, abs=0.005)
    assert area.min() >= 0.24 and area.max() <= 0.71
    # Uniform in [0.25, 0.7]: each quarter of the range holds a quarter of the boxes.
    counts = np.histogram(area, bins=4, range=(0.25, 0.7))[0] / n
    np.testing.assert_allclose(counts, 0.25, atol=0.02)
    log_ratio = np.log(bw / bh)
    assert log_ratio.mean() == pytest.approx(0.0, abs=0.01)
    assert abs(log_ratio).max() <= math.log(4 / 3) + 0.02
    # Log-uniform: as many boxes wider than 1.15 as narrower than 1/1.15.
    assert (log_ratio > math.log(1.15)).mean() == pytest.approx(
        (log_ratio < -math.log(1.15)).mean(), abs=0.015)
    assert (top >= 0).all() and (top + bh <= h).all() and (left + bw <= w).all()
    # Placement is uniform over where the box fits.
    assert (top / np.maximum(h - bh, 1)).mean() == pytest.approx(0.5, abs=0.02)


def test_a_box_that_never_fits_falls_back_to_the_whole_image():
    top, left, bh, bw, found = sample_boxes(np.random.default_rng(5), 50, 10, 10,
                                            (0.9, 1.0), (4.0, 5.0))
    assert not found.any()
    assert (bh == 10).all() and (bw == 10).all() and (top == 0).all() and (left == 0).all()


def test_bilinear_resize_halving_is_two_by_two_averaging_and_identity_is_exact():
    x = RNG.standard_normal((3, 2, 10, 12))
    top, left = np.array([0, 1, 2]), np.array([0, 3, 4])
    size = np.array([8, 8, 8])
    out = resize_boxes(x, top, left, size, size, 4, 4)
    for i in range(3):
        box = x[i, :, top[i]:top[i] + 8, left[i]:left[i] + 8]
        pooled = box.reshape(2, 4, 2, 4, 2).mean(axis=(2, 4))
        np.testing.assert_allclose(out[i], pooled, rtol=1e-12)
    whole = resize_boxes(x, np.zeros(3, int), np.zeros(3, int), np.full(3, 10), np.full(3, 12),
                         10, 12)
    np.testing.assert_array_equal(whole, x)


def test_resized_crop_output_shape_and_values_come_from_the_image():
    x = RNG.uniform(2.0, 3.0, (64, 3, 16, 16)).astype(np.float32)
    out = ResizedCrop()(x, np.random.default_rng(6), 12, 12)
    assert out.shape == (64, 3, 12, 12) and out.dtype == np.float32
    assert out.min() >= 2.0 and out.max() <= 3.0     # convex combinations of pixels


# --- mixup and CutMix ---------------------------------------------------------------------
def _labelled_batch(n=16, h=8):
    """Images that are constant, equal to their label: a pixel says where it came from."""
    labels = np.arange(n) % 10
    x = np.broadcast_to(labels[:, None, None, None], (n, 2, h, h)).astype(np.float64)
    return x, labels


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_mixup_lambda_is_beta_distributed_and_images_match_targets(alpha):
    rng = np.random.default_rng(7)
    mix = Mix(mixup_alpha=alpha)
    lams = []
    for _ in range(3000):
        x, labels = _labelled_batch()
        out, t = mix(x, labels, rng)
        assert t.shape == (16, 3)
        np.testing.assert_array_equal(t[:, 0], labels)
        assert sorted(t[:, 1]) == sorted(labels)               # a permutation of the batch
        np.testing.assert_allclose(out[:, 0, 0, 0], t[:, 2] * t[:, 0] + (1 - t[:, 2]) * t[:, 1])
        lams.append(t[0, 2])
    lams = np.array(lams)
    assert lams.mean() == pytest.approx(0.5, abs=0.02)
    assert lams.var() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.07)


def test_cutmix_lambda_is_the_share_of_pixels_kept():
    rng = np.random.default_rng(8)
    mix = Mix(cutmix_alpha=1.0)
    lams = []
    for _ in range(2000):
        x, labels = _labelled_batch(h=32)
        out, t = mix(x, labels, rng)
        a, b, lam = t[:, 0], t[:, 1], t[:, 2]
        from_a = (out[:, 0] == a[:, None, None]).mean(axis=(1, 2))
        same = a == b
        np.testing.assert_allclose(from_a[~same], lam[~same])
        lams.append(lam[0])
    # Uniform lam (alpha 1), then the box is clipped at the edges: kept share >= lam.
    assert 0.5 < np.mean(lams) < 0.75


def test_mix_probability_and_switching():
    rng = np.random.default_rng(9)
    mix = Mix(mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.5)
    kinds = {"none": 0, "mixup": 0, "cutmix": 0}
    for _ in range(2000):
        x, labels = _labelled_batch(h=16)
        out, t = mix(x, labels, rng)
        if (t[:, 2] == 1).all() and (t[:, 0] == t[:, 1]).all():
            kinds["none"] += 1
        elif np.isin(out, np.arange(10)).all():
            kinds["cutmix"] += 1
        else:
            kinds["mixup"] += 1
    assert kinds["none"] / 2000 == pytest.approx(0.5, abs=0.04)
    assert kinds["mixup"] / 2000 == pytest.approx(0.25, abs=0.04)
    assert kinds["cutmix"] / 2000 == pytest.approx(0.25, abs=0.04)


# --- the loss and accuracy with mixed targets ----------------------------------------------
def _mixed(n, k, seed=0):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, k, n), rng.integers(0, k, n)
    lam = rng.uniform(0, 1, n)
    return a, b, lam, np.stack([a, b, lam], axis=1).astype(np.float64)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_loss_with_mixed_targets_is_the_mixture_of_two_losses(smoothing):
    n, k = 6, 5
    x = RNG.standard_normal((n, k))
    a, b, lam, targets = _mixed(n, k)
    lp = {"label_smoothing": smoothing}
    mixed, shapes = make_layer("SoftmaxWithLoss", [(n, k), (n, 3)], loss_param=lp)
    plain, _ = make_layer("SoftmaxWithLoss", [(n, k), (n,)], loss_param={**lp,
                                                                         "normalization": "NONE"})
    per_a = [float(plain.forward([x[i:i + 1], a[i:i + 1].astype(float)])[0]) for i in range(n)]
    per_b = [float(plain.forward([x[i:i + 1], b[i:i + 1].astype(float)])[0]) for i in range(n)]
    expected = np.mean(lam * per_a + (1 - lam) * np.array(per_b))
    assert shapes[0] == ()
    assert float(mixed.forward([x, targets])[0]) == pytest.approx(expected, rel=1e-12)
    assert_gradients(mixed, [x, targets], check_bottoms=[True, False])


def test_mixed_targets_spatial_and_unmixed_rows_equal_plain_labels():
    x = RNG.standard_normal((2, 4, 3, 3))
    lab = RNG.integers(0, 4, (2, 3, 3)).astype(float)
    unmixed = np.stack([lab, lab, np.ones_like(lab)], axis=-1)
    plain, _ = make_layer("SoftmaxWithLoss", [(2, 4, 3, 3), (2, 3, 3)])
    mixed, _ = make_layer("SoftmaxWithLoss", [(2, 4, 3, 3), (2, 3, 3, 3)])
    assert float(mixed.forward([x, unmixed])[0]) == pytest.approx(
        float(plain.forward([x, lab])[0]), rel=1e-12)
    _, _, _, t = _mixed(18, 4, seed=3)
    assert_gradients(mixed, [x, t.reshape(2, 3, 3, 3)], check_bottoms=[True, False])


def test_accuracy_with_mixed_targets_weighs_each_label_by_its_share():
    scores = np.array([[3.0, 1, 0], [0, 3, 1], [1, 0, 3], [3, 0, 1]])
    targets = np.array([[0, 1, 0.7], [2, 1, 0.6], [0, 1, 0.5], [1, 2, 1.0]])
    layer, _ = make_layer("Accuracy", [(4, 3), (4, 3)], tops=2)
    acc, per = layer.forward([scores, targets])
    # Hits: image 0 on a (0.7), image 1 on b (0.4), image 2 on neither, image 3 on neither.
    assert float(acc) == pytest.approx((0.7 + 0.4) / 4)
    # Class 0: weight 0.7 + 0.5, hit 0.7; class 1: 0.3 + 0.4 + 0.5 + 1.0, hit 0.4.
    np.testing.assert_allclose(per, [0.7 / 1.2, 0.4 / 2.2, 0.0])


def test_labels_of_the_wrong_width_are_refused():
    with pytest.raises(Exception, match=r"for mixed targets"):
        make_layer("SoftmaxWithLoss", [(4, 5), (4, 2)])


# --- configuration --------------------------------------------------------------------------
def _net(train_transform, test_transform=None, both_phases=False):
    data = {"name": "d", "type": "Data", "top": ["data", "label"],
            "data_param": {"dataset": "cifar10", "batch_size": 4},
            "transform_param": train_transform}
    if not both_phases:
        data["include"] = {"phase": "TRAIN"}
    layers = [data]
    if not both_phases:
        layers.append({"name": "d", "type": "Data", "top": ["data", "label"],
                       "include": {"phase": "TEST"},
                       "data_param": {"dataset": "cifar10", "batch_size": 4},
                       "transform_param": test_transform or {}})
    layers.append({"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["data", "label"],
                   "top": "loss"})
    return {"name": "n", "layer": layers}


@pytest.mark.parametrize("field,value", [("erase_prob", 0.5), ("resized_crop", True),
                                         ("mixup_alpha", 0.2), ("cutmix_alpha", 1.0)])
def test_train_only_fields_are_refused_in_test(field, value):
    parse_net(_net({field: value}), "c.yaml")                     # TRAIN only: fine
    with pytest.raises(ConfigError, match=rf"transform_param\.{field}.*TRAIN-only"):
        parse_net(_net({}, {field: value}), "c.yaml")
    with pytest.raises(ConfigError, match="TRAIN-only"):
        parse_net(_net({field: value}, both_phases=True), "c.yaml")


@pytest.mark.parametrize("field,value,words", [
    ("erase_scale", [0.3, 0.1], "larger than max"),
    ("erase_ratio", [0.5], "two numbers"),
    ("resized_crop_scale", [0.1, 1.5], "at most 1"),
    ("resized_crop_ratio", [0.0, 2.0], "larger than 0"),
    ("erase_prob", 1.5, "at most|<= 1|1"),
])
def test_bad_ranges_are_one_line_errors(field, value, words):
    with pytest.raises(ConfigError, match=words) as err:
        parse_net(_net({field: value}), "c.yaml")
    assert "\n" not in str(err.value) and field in str(err.value)


def test_layer_spec_fills_the_augmentation_defaults():
    spec = parse_layer({"name": "d", "type": "Data", "top": ["data"],
                        "data_param": {"dataset": "cifar10", "batch_size": 2}}, "c.yaml", 0)
    t = spec.blocks["transform_param"]
    assert t.erase_prob == 0 and not t.resized_crop and t.mixup_alpha == 0 == t.cutmix_alpha


# --- end to end: training, exact resume, errors ---------------------------------------------
AUG = "{mean_image: true, scale: 0.01, mirror: true, shift: 0, resized_crop: true, " \
      "crop_size: 28, erase_prob: 0.5, erase_size: 8, mixup_alpha: 0.4, cutmix_alpha: 1.0}"
AUG_CONFIG = CONFIG.replace("{mean_image: true, scale: 0.01, mirror: true, shift: 2}", AUG) \
    .replace("data_param: {dataset: cifar10, split: test, batch_size: 10}\n"
             "      transform_param: {mean_image: true, scale: 0.01}",
             "data_param: {dataset: cifar10, split: test, batch_size: 10}\n"
             "      transform_param: {mean_image: true, scale: 0.01, crop_size: 28}") \
    .replace("      include: {phase: TEST}\n    - name: loss",
             "    - name: loss")       # Accuracy in TRAIN too: it reads the mixed targets


def test_augmented_training_resumes_exactly(tmp_path):
    assert AUG in AUG_CONFIG and "crop_size: 28}" in AUG_CONFIG
    data = write_cifar10_binary(tmp_path / "data")
    config = tmp_path / "tiny.yaml"
    config.write_text(AUG_CONFIG)
    full = run("train", config, "--data-dir", data, "--runs-dir", tmp_path / "a", "--no-progress")
    assert full.exit_code == 0, full.output
    run_a = tmp_path / "a" / "tiny"
    resumed = run("train", config, "--data-dir", data, "--runs-dir", tmp_path / "b",
                  "--no-progress", "--resume", run_a / "snapshots" / "iter_6.h5")
    assert resumed.exit_code == 0, resumed.output
    losses_a, losses_b = train_losses(run_a), train_losses(tmp_path / "b" / "tiny")
    assert set(losses_b) >= {"7", "12"} and all(losses_b[it] == losses_a[it] for it in losses_b)
    assert_same_weights(run_a / "snapshots" / "iter_12.h5",
                        tmp_path / "b" / "tiny" / "snapshots" / "iter_12.h5")
    # Another seed cuts other batches: the augmentation is random, not fixed.
    other = run("train", config, "--data-dir", data, "--runs-dir", tmp_path / "c",
                "--no-progress", "--set", "solver.random_seed=4")
    losses_c = train_losses(tmp_path / "c" / "tiny")
    assert other.exit_code == 0 and losses_c["1"] != losses_a["1"]


def test_train_only_augmentation_in_test_is_a_config_error_from_the_cli(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG.replace("transform_param: {mean_image: true, scale: 0.01}",
                                     "transform_param: {mean_image: true, scale: 0.01, "
                                     "erase_prob: 0.5}"))
    result = run("train", config, "--runs-dir", tmp_path / "runs", "--no-progress")
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line and "transform_param.erase_prob" in line and "TRAIN-only" in line
    assert "Traceback" not in result.output and not (tmp_path / "runs" / "tiny").exists()
