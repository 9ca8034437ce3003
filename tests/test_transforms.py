"""Data transforms and batch order: vectorized, seeded, resumable."""
import numpy as np

from cnntrain.data.batches import BatchSampler
from cnntrain.data.transforms import Transformer


def images(n=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 6, 5)).astype(np.uint8)


def test_mean_then_scale_as_caffe():
    x = images()
    mean = np.full((3, 6, 5), 100.0)
    out = Transformer(scale=0.5, mean=mean, train=False)(x, np.random.default_rng(0))
    np.testing.assert_allclose(out, (x.astype(np.float32) - 100.0) * 0.5)
    per_channel = Transformer(mean=np.array([1.0, 2.0, 3.0]).reshape(3, 1, 1), train=False)
    np.testing.assert_allclose(per_channel(x, None)[:, 2], x[:, 2] - 3.0)


def test_mirror_flips_about_half_and_only_in_train():
    x = images(400)
    out = Transformer(mirror=True)(x, np.random.default_rng(1))
    flipped = np.array([np.array_equal(o, i[:, :, ::-1]) for o, i in zip(out, x)])
    same = np.array([np.array_equal(o, i) for o, i in zip(out, x)])
    assert np.all(flipped | same) and 150 < flipped.sum() < 250
    np.testing.assert_array_equal(Transformer(mirror=True, train=False)(x, None), x)


def test_shift_moves_each_image_by_at_most_n_pixels_with_zero_fill():
    x = images(200) + 1  # no zeros in the picture itself (values 1..256 wrap only at 255)
    x = np.clip(x, 1, 255).astype(np.uint8)
    t = Transformer(shift=2)
    out = t(x, np.random.default_rng(2))
    assert out.shape == x.shape
    seen = set()
    for o, i in zip(out, x):
        found = None
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                padded = np.zeros((3, 10, 9), np.float32)
                padded[:, 2:8, 2:7] = i
                if np.array_equal(o, padded[:, 2 + dy:8 + dy, 2 + dx:7 + dx]):
                    found = (dy, dx)
        assert found is not None
        seen.add(found)
    assert len(seen) == 25  # every offset occurs
    np.testing.assert_array_equal(Transformer(shift=2, train=False)(x, None), x)


def test_crop_random_in_train_centered_in_test():
    x = images(50)
    out = Transformer(crop_size=4)(x, np.random.default_rng(3))
    assert out.shape == (50, 3, 4, 4)
    centre = Transformer(crop_size=4, train=False)(x, None)
    np.testing.assert_array_equal(centre, x[:, :, 1:5, 0:4])


def test_augmentation_follows_the_seed():
    x = images(64)
    t = Transformer(mirror=True, shift=2)
    a = t(x, np.random.default_rng(9))
    b = t(x, np.random.default_rng(9))
    np.testing.assert_array_equal(a, b)


def test_reflect_padding_fills_the_shift_border_with_the_mirrored_image():
    x = images(300)
    out = Transformer(shift=2, pad_mode="reflect")(x, np.random.default_rng(4))
    padded = np.pad(x.astype(np.float32), ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect")
    offsets = set()
    for o, p in zip(out, padded):
        found = [(i, j) for i in range(5) for j in range(5)
                 if np.array_equal(o, p[:, i:i + 6, j:j + 5])]
        assert found, "every output is a window of the reflected image"
        offsets.update(found)
    assert len(offsets) == 25


def test_alternating_mirror_flips_each_image_in_every_other_epoch():
    x = images(40)
    bits = np.random.default_rng(5).random(40) < 0.5
    t = Transformer(mirror="alternate", flip_bits=bits)
    index = np.arange(40)
    flipped = []
    for epoch in range(4):
        out = t(x, None, index, np.full(40, epoch))
        mirrored = np.array([np.array_equal(o, i[:, :, ::-1]) for o, i in zip(out, x)])
        assert all(np.array_equal(o, i[:, :, ::-1] if m else i)
                   for o, i, m in zip(out, x, mirrored))
        flipped.append(mirrored)
    np.testing.assert_array_equal(flipped[0], bits)
    np.testing.assert_array_equal(flipped[1], ~bits)
    np.testing.assert_array_equal(flipped[2], bits)
    np.testing.assert_array_equal(flipped[3], ~bits)
    # A batch that runs across an epoch's end flips each image by its own epoch.
    mixed = t(x[:4], None, index[:4], np.array([0, 0, 1, 1]))
    expect = [bits[0], bits[1], not bits[2], not bits[3]]
    for o, i, m in zip(mixed, x[:4], expect):
        np.testing.assert_array_equal(o, i[:, :, ::-1] if m else i)


def test_sampler_reports_the_epoch_of_each_index():
    s = BatchSampler(10, 4, True, np.random.default_rng(0))
    s.next(), s.next()
    s.next()                       # 2 images of epoch 0, then 2 of epoch 1
    np.testing.assert_array_equal(s.last_epochs, [0, 0, 1, 1])
    s.next()
    np.testing.assert_array_equal(s.last_epochs, [1, 1, 1, 1])


def test_sampler_shuffles_each_epoch_covers_all_and_resumes_exactly():
    s = BatchSampler(10, 4, True, np.random.default_rng(0))
    first_epoch = np.concatenate([s.next(), s.next(), s.next()[:2]])
    assert sorted(first_epoch) == list(range(10))
    state = {k: np.copy(v) for k, v in s.state().items()}
    rng_state = s.rng.bit_generator.state
    ahead = [s.next() for _ in range(5)]
    t = BatchSampler(10, 4, True, np.random.default_rng(123))
    t.set_state(state)
    t.rng.bit_generator.state = rng_state
    for a, b in zip(ahead, [t.next() for _ in range(5)]):
        np.testing.assert_array_equal(a, b)


def test_test_sampler_covers_the_set_once_per_pass():
    s = BatchSampler(10, 4, False, np.random.default_rng(0), wrap=False)
    assert [list(s.next()) for _ in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    s.rewind()
    assert list(s.next()) == [0, 1, 2, 3]
