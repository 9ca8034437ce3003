"""The model zoo in configs/: every config passes `cnntrain summary --json`, the published
parameter counts hold exactly, and each CIFAR-10 config trains 50 iterations on the tiny
generated CIFAR-10 of test_cli_e2e (batch 8) with a finite, falling loss."""
import functools
import json
import math
from pathlib import Path

import pytest

from test_cli_e2e import metrics, write_cifar10_binary
from tool_helpers import run

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ZOO = sorted(p for p in CONFIGS.glob("**/*.yaml") if not p.name.startswith("cifar100"))


@functools.lru_cache(maxsize=None)
def summary(path):
    result = run("summary", path, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("path", ZOO, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_zoo_config_builds_and_summarizes(path):
    doc = summary(path)
    assert doc["train"]["params"] > 0 and doc["train"]["macs_per_image"] > 0


@pytest.mark.parametrize("config, params", [
    ("imagenet/alexnet.yaml", 60_965_224),      # Caffe's bvlc_alexnet
    ("imagenet/vgg16.yaml", 138_357_544),       # VGG-16, configuration D
    ("imagenet/googlenet.yaml", 6_998_552),     # bvlc_googlenet less its auxiliary heads
    ("cifar10_full.yaml", 89_578),              # Caffe's cifar10_full
])
def test_published_parameter_counts(config, params):
    assert summary(CONFIGS / config)["train"]["params"] == params


def test_resnet20_has_the_papers_0_27_m_parameters():
    # 272,474: 270,906 in the convolutions and the classifier (2,656 of them in the two
    # 1x1 projection shortcuts) plus 1,568 BatchNorm Scale weights and biases.
    params = summary(CONFIGS / "resnet20_cifar10.yaml")["train"]["params"]
    assert 260_000 <= params <= 280_000 and params == 272_474


def test_imagenet_nets_end_in_1000_classes_at_their_input_size():
    for name, size in [("alexnet", 227), ("vgg16", 224), ("googlenet", 224)]:
        layers = summary(CONFIGS / "imagenet" / f"{name}.yaml")["test"]["layers"]
        assert layers[0]["tops"] == {"data": [1, 3, size, size]}
        assert layers[-1]["type"] == "Softmax" and layers[-1]["tops"] == {"prob": [1, 1000]}


# The BatchNorm nets' rates are set for their batches of 64-128; at batch 8 they take the
# linear scaling rule (base_lr x 8 / batch), as their first steps at full rate on 8 images
# overshoot. Caffe's cifar10_full trains at its own rate. VGG takes about 6 s, the rest
# less than 5 s each on two cores.
CIFAR = {"cifar10_full": None, "cifar10_full_fast": None,
         "vgg_cifar10": 0.05 * 8 / 128, "resnet20_cifar10": 0.1 * 8 / 128,
         "densenet_cifar10": 0.1 * 8 / 64, "inception_cifar10": 0.05 * 8 / 128,
         "mobilenet_cifar10": 0.05 * 8 / 128}


@pytest.mark.parametrize("name", CIFAR)
def test_cifar_config_trains_50_iterations_with_a_falling_loss(tmp_path, name):
    rate = () if CIFAR[name] is None else ("--set", f"solver.base_lr={CIFAR[name]}")
    data = write_cifar10_binary(tmp_path / "data")
    result = run("train", CONFIGS / f"{name}.yaml", "--data-dir", data,
                 "--runs-dir", tmp_path / "r", "--no-progress",
                 "--set", "net.layer.cifar.data_param.batch_size=8",
                 "--set", "solver.max_iter=50", "--set", "solver.display=1",
                 "--set", "solver.warmup_iter=0",      # the warm-ups are longer than the run
                 "--set", "solver.test_interval=50", "--set", "solver.test_iter=2",
                 "--set", "solver.snapshot=0", *rate)
    assert result.exit_code == 0, result.output
    rows = metrics(tmp_path / "r" / name)
    losses = [float(r["loss"]) for r in rows if r["loss"]]
    assert len(losses) == 50 and all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"{name}: loss {first:.3f} -> {last:.3f}")
    assert last < first, (first, last)
