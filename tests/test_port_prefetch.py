"""The background prefetch thread changes nothing: same batches, same augmentation, same
snapshot states, same weights, and a resumed run still matches an uninterrupted one."""
import urllib.error

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from cifar_fixtures import make_fake, write_layout
from cnntrain.cli import main
from cnntrain.config import parse_layer
from cnntrain.data import download as download_module
from cnntrain.layers import BuildContext
from cnntrain.rng import RngStreams


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("tests never use the network")

    monkeypatch.setattr(download_module, "urlopen", offline)


@pytest.fixture
def data_dir(tmp_path):
    write_layout(tmp_path / "data", make_fake("cifar10", n_train=23, n_test=7, seed=3), "binary")
    return tmp_path / "data"


def layer(data_dir, prefetch, seed=5):
    from cnntrain.layers.data import Data

    spec = parse_layer({"name": "cifar", "type": "Data", "top": ["data", "label"],
                        "data_param": {"dataset": "cifar10", "batch_size": 5,
                                       "prefetch": prefetch},
                        "transform_param": {"mean_image": True, "mirror": True, "shift": 2}},
                       "t.yaml", 0)
    rngs = RngStreams(seed)
    out = Data(spec, "TRAIN", BuildContext(rngs=rngs, data_dir=data_dir, notify=lambda m: None))
    out.setup([])
    return out, rngs


def same_state(a, b):
    sa, sb = a[0].extra_state(), b[0].extra_state()
    assert sa.keys() == sb.keys()
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key])
    assert a[1].state() == b[1].state()


def test_same_batches_and_states_after_every_batch(data_dir):
    plain, fast = layer(data_dir, False), layer(data_dir, True)
    for _ in range(15):   # 75 images: three epochs and a bit, wrapping mid-batch
        for a, b in zip(plain[0].forward([]), fast[0].forward([])):
            np.testing.assert_array_equal(a, b)
        same_state(plain, fast)   # what a snapshot taken now would hold
    assert plain[0].prefetcher is None
    assert fast[0].prefetcher.used >= 10   # the background batches were really used


def test_states_moved_from_outside_make_the_prefetched_batch_stale(data_dir):
    plain, fast = layer(data_dir, False), layer(data_dir, True)
    for _ in range(3):
        plain[0].forward([]), fast[0].forward([])
    # as a resume does: load another position and other stream states into both
    donor = layer(data_dir, False, seed=99)
    for _ in range(4):
        donor[0].forward([])
    for target in (plain, fast):
        target[0].load_extra_state(donor[0].extra_state())
        target[1].set_state(donor[1].state())
    dropped = fast[0].prefetcher.dropped
    for _ in range(6):
        want = donor[0].forward([])
        for a, b, c in zip(plain[0].forward([]), fast[0].forward([]), want):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)
    assert fast[0].prefetcher.dropped == dropped + 1
    # another user of the augmentation stream between two batches
    fast[1].get("augment").random(3)
    plain[1].get("augment").random(3)
    for a, b in zip(plain[0].forward([]), fast[0].forward([])):
        np.testing.assert_array_equal(a, b)
    assert fast[0].prefetcher.dropped == dropped + 2


CONFIG = """\
name: {name}
net:
  layer:
    - {{name: cifar, type: Data, top: [data, label], include: {{phase: TRAIN}},
       data_param: {{dataset: cifar10, batch_size: 6, prefetch: {prefetch}}},
       transform_param: {{mean_image: true, scale: 0.01, mirror: true, shift: 2}}}}
    - {{name: cifar, type: Data, top: [data, label], include: {{phase: TEST}},
       data_param: {{dataset: cifar10, split: test, batch_size: 4}},
       transform_param: {{mean_image: true, scale: 0.01}}}}
    - {{name: conv, type: Convolution, bottom: data, top: conv,
       convolution_param: {{num_output: 3, kernel_size: 3, stride: 2}}}}
    - {{name: relu, type: ReLU, bottom: conv, top: conv}}
    - {{name: drop, type: Dropout, bottom: conv, top: conv}}
    - {{name: ip, type: InnerProduct, bottom: conv, top: ip,
       inner_product_param: {{num_output: 10}}}}
    - {{name: loss, type: SoftmaxWithLoss, bottom: [ip, label], top: loss}}
solver: {{base_lr: 0.05, momentum: 0.9, max_iter: 10, display: 1, test_interval: 4,
          snapshot: 4, random_seed: 7}}
"""


def weights(path):
    with h5py.File(path) as f:
        return {k: f["data"][k]["0"][()] for k in f["data"]}


def test_training_with_and_without_prefetch_and_resumed_is_bit_identical(tmp_path, data_dir):
    def train(prefetch, runs, *extra):
        config = tmp_path / f"{runs}.yaml"
        config.write_text(CONFIG.format(name="p", prefetch=str(prefetch).lower()))
        result = CliRunner().invoke(main, ["train", str(config), "--data-dir", str(data_dir),
                                           "--runs-dir", str(tmp_path / runs), "--no-progress",
                                           *map(str, extra)])
        assert result.exit_code == 0, result.output
        return tmp_path / runs / "p" / "snapshots"

    off, on = train(False, "off"), train(True, "on")
    resumed = train(True, "resumed", "--resume", on / "iter_4.h5")
    final = weights(off / "iter_10.h5")
    for snaps in (on, resumed):
        got = weights(snaps / "iter_10.h5")
        assert got.keys() == final.keys()
        for key in final:
            np.testing.assert_array_equal(got[key], final[key])
    with h5py.File(off / "iter_8.h5") as a, h5py.File(on / "iter_8.h5") as b:
        assert a.attrs["rng"] == b.attrs["rng"]
        for key in a["state/data/cifar"]:
            np.testing.assert_array_equal(a["state/data/cifar"][key][()],
                                          b["state/data/cifar"][key][()])
