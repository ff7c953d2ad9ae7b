"""Input pipelines: split slicing, tf.data shapes and dtypes, augmentation, the no-data error."""

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

from kcnn import data


def test_split_names_hold_out_the_last_fraction():
    assert data.split_names(60_000, 0.1) == ("train[:54000]", "train[54000:]", 6_000)
    assert data.split_names(50_000, 0.0) == ("train", None, 0)
    with pytest.raises(ValueError, match=r"val_split must be in \[0, 0.5\]. Received: val_split=0.6"):
        data.split_names(100, 0.6)


@pytest.mark.parametrize("name, shape, policy", [
    ("cifar10", (32, 32, 3), "crop_flip"),
    ("mnist", (28, 28, 1), "affine"),
    ("mnist", (28, 28, 1), "none"),
])
def test_pipeline_on_mock_data_gives_uint8_batches(name, shape, policy):
    with tfds.testing.mock_data(num_examples=20):
        ds = tfds.load(name, split="train", as_supervised=True)
        batches = list(data.make_pipeline(ds, batch_size=8, training=True, seed=1,
                                          augmentation=data.make_augmentation(policy, seed=1)))
    assert [int(x.shape[0]) for x, _ in batches] == [8, 8, 4]
    for images, labels in batches:
        assert tuple(images.shape[1:]) == shape
        assert images.dtype.name == "uint8"
        assert labels.dtype.name == "int64"


@pytest.mark.parametrize("policy", ["flip", "crop_flip", "flip_erase", "shift", "affine", "flip_shift",
                                    "flip_shift_cutout", "flip_shift_randaugment"])
def test_pipeline_builds_its_augmentation_when_torchs_default_device_cannot_reach_tensorflow(policy, monkeypatch):
    """On a CUDA machine, Keras' build-by-running of an unbuilt layer inside the tf.data trace failed, leaving
    the TensorFlow-side seed generators uninitialized ("'NoneType' object has no attribute 'assign'", seen on
    an H100). Torch's "meta" device fails the same way on any machine, so this test needs no GPU."""
    import keras.src.backend.torch.core as torch_core
    import tensorflow as tf

    monkeypatch.setattr(torch_core, "DEFAULT_DEVICE", "meta")
    images = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    ds = tf.data.Dataset.from_tensor_slices((images, np.arange(8, dtype=np.int64)))
    for seed in (0, None):
        pipeline = data.make_pipeline(ds, batch_size=4, training=True, seed=seed,
                                      augmentation=data.make_augmentation(policy, seed=seed))
        batches = [(x.numpy(), y.numpy()) for x, y in pipeline]
        assert [x.shape for x, _ in batches] == [(4, 28, 28, 1)] * 2
        assert sorted(np.concatenate([y for _, y in batches])) == list(range(8))


def test_augmentation_changes_images_per_example():
    import tensorflow as tf

    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3)).astype("float32")
    augmented = data.make_augmentation("crop_flip", seed=3)(tf.constant(images), training=True)
    out = keras.ops.convert_to_numpy(augmented)  # a torch tensor, on the GPU where there is one
    assert out.shape == images.shape
    changed = [not np.array_equal(out[i], images[i]) for i in range(16)]
    assert 0 < sum(changed)  # something moved
    # pad-4 crop: a shifted image keeps its pixel values (nearest), zeros fill the border
    assert set(np.unique(out)) <= set(np.unique(images)) | {0.0}


def test_flip_erase_fills_one_rectangle_of_2_to_33_percent_in_about_half_the_images():
    import tensorflow as tf

    images = np.full((400, 28, 28, 1), 100.0, "float32")  # flips leave a constant image unchanged
    augmented = data.make_augmentation("flip_erase", seed=4)(tf.constant(images), training=True)
    changed = keras.ops.convert_to_numpy(augmented)[..., 0] != 100.0
    erased = changed.reshape(400, -1).any(axis=1)
    assert abs(erased.mean() - data.ERASE_PROBABILITY) < 0.08
    for mask in changed[erased]:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        assert mask.sum() == box  # one solid rectangle (noise fill never lands on exactly 100)
        assert 0.01 <= box / mask.size <= 0.36  # Keras' scale (0.02, 0.33), give or take rounding to pixels


def test_shift_moves_each_digit_by_at_most_two_whole_pixels_with_zero_fill():
    import tensorflow as tf

    images = np.random.default_rng(1).integers(1, 256, (32, 28, 28, 1)).astype("float32")
    augmented = data.make_augmentation("shift", seed=5)(tf.constant(images), training=True)
    out = keras.ops.convert_to_numpy(augmented)  # a torch tensor, on the GPU where there is one

    def shifted(image, dy, dx):
        padded = np.pad(image, ((2, 2), (2, 2), (0, 0)))
        return padded[2 - dy:30 - dy, 2 - dx:30 - dx]

    found = [next(((dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if np.array_equal(out[i], shifted(images[i], dy, dx))), None) for i in range(32)]
    assert None not in found  # every output is a whole-pixel shift within ±2
    assert len(set(found)) > 5  # and the shifts differ between images


def test_flip_shift_mirrors_or_not_then_shifts_by_at_most_two_whole_pixels_with_the_border_mirrored():
    import tensorflow as tf

    images = np.random.default_rng(1).integers(0, 256, (32, 32, 32, 3)).astype("float32")
    augmented = data.make_augmentation("flip_shift", seed=5)(tf.constant(images), training=True)
    out = keras.ops.convert_to_numpy(augmented)  # a torch tensor, on the GPU where there is one

    def expected(image, dy, dx, flip):
        image = image[:, ::-1] if flip else image
        padded = np.pad(image, ((2, 2), (2, 2), (0, 0)), mode="symmetric")  # Keras' "reflect": d c b a | a b c d
        return padded[2 - dy:34 - dy, 2 - dx:34 - dx]

    found = [next(((dy, dx, flip) for dy in range(-2, 3) for dx in range(-2, 3) for flip in (False, True)
                   if np.array_equal(out[i], expected(images[i], dy, dx, flip))), None) for i in range(32)]
    assert None not in found  # every output is a (mirrored) whole-pixel shift within ±2
    assert len({(dy, dx) for dy, dx, _ in found}) > 5  # the shifts differ between images
    assert 0 < sum(flip for _, _, flip in found) < 32  # some mirrored, some not


def test_unknown_augmentation_policy():
    with pytest.raises(ValueError, match=r"Unknown augmentation policy; valid: none, flip, crop_flip, flip_erase, "
                                         r"shift, affine, flip_shift, altflip_shift, flip_shift_cutout, flip_shift_mixup, "
                                         r"flip_shift_cutmix, flip_shift_randaugment. Received: policy='cutmix'"):
        data.make_augmentation("cutmix")


def keyed_batches(policy, images, labels, epoch_value=0):
    """One pass of a seeded training pipeline of ``policy`` keyed to ``epoch_value``, as NumPy pairs."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    epoch = tf.Variable(epoch_value, dtype=tf.int64)
    pipeline = data.make_pipeline(ds, batch_size=8, training=True, seed=1, epoch=epoch, num_classes=10,
                                  augmentation=data.make_augmentation(policy, seed=1))
    return [(x.numpy(), y.numpy()) for x, y in pipeline]


@pytest.mark.parametrize("policy", ["flip_shift_cutout", "flip_shift_mixup", "flip_shift_cutmix",
                                    "flip_shift_randaugment"])
def test_the_tutorials_future_work_augmentations_are_keyed_and_mix_labels_where_they_should(policy):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(16, dtype=np.int64) % 10
    first, again, other_epoch = (keyed_batches(policy, images, labels, e) for e in (0, 0, 1))
    for (x, y), (x2, y2) in zip(first, again, strict=True):  # a resumed run sees the same batches
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other_epoch))
    x, y = first[0]
    assert x.dtype == np.uint8 and x.shape == (8, 32, 32, 3)
    if policy in ("flip_shift_mixup", "flip_shift_cutmix"):  # soft labels: weights of two classes summing to 1
        assert y.dtype == np.float32 and y.shape == (8, 10)
        np.testing.assert_allclose(y.sum(axis=1), 1, atol=1e-5)
        assert ((y > 0).sum(axis=1) <= 2).all() and (y.max(axis=1) < 1 - 1e-3).any()
    else:
        assert y.dtype == np.int64 and y.shape == (8,)


def test_altflip_shift_mirrors_each_image_one_way_in_even_epochs_and_the_other_way_in_odd_ones():
    images = np.zeros((16, 32, 32, 3), np.uint8)
    images[:, :, 16:] = 255  # the right half bright: a shift of 2 pixels leaves the sides as they are
    labels = np.arange(16, dtype=np.int64)  # each image's identity, whatever the order

    def mirrored(epoch):
        found = {}
        for x, y in keyed_batches("altflip_shift", images, labels, epoch):
            for image, label in zip(x, y):
                found[int(label)] = bool(image[:, :12].mean() > image[:, 20:].mean())
        return found

    even, odd = mirrored(0), mirrored(1)
    assert mirrored(2) == even and all(odd[i] != even[i] for i in range(16))
    assert 0 < sum(even.values()) < 16  # each image's first orientation is its own coin


def test_cutout_erases_a_16_pixel_square_of_every_image():
    images = np.full((16, 32, 32, 3), 100, np.uint8)  # flips and reflected shifts leave a flat image flat
    batches = keyed_batches("flip_shift_cutout", images, np.zeros(16, np.int64))
    for x, _ in batches:
        erased = (x == 128).all(axis=-1)
        assert (erased.sum(axis=(1, 2)) == 16 * 16).all()
        for mask in erased:  # one square: 16 rows of 16
            rows, cols = np.nonzero(mask)
            assert (rows.max() - rows.min(), cols.max() - cols.min()) == (15, 15)


def test_label_mixing_trains_with_one_hot_labels(fake_data_dir, tmp_path):
    from helpers import tiny_train

    result = tiny_train(fake_data_dir, tmp_path / "run", dataset="cifar10", augment="flip_shift_mixup", epochs=1)
    assert result.config.one_hot and np.isfinite(result.metrics["test_loss"])


def test_missing_data_names_the_dataset_and_both_ways_out(tmp_path):
    with pytest.raises(data.DataNotFoundError) as err:
        data.load_info("mnist", data_dir=str(tmp_path))
    message = str(err.value)
    assert "'mnist'" in message and str(tmp_path) in message
    assert "TFDS_DATA_DIR" in message and "--data-dir" in message


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(ValueError, match="Unknown dataset 'mnits'"):
        data.load_info("mnits", data_dir=str(tmp_path))


def test_load_datasets_on_a_prepared_copy(fake_data_dir):
    ds = data.load_datasets(data.load_info("cifar10", fake_data_dir), batch_size=16, val_split=0.25)
    assert ds.info.class_names[0] == "airplane" and ds.info.num_classes == 10
    assert (ds.num_train, ds.num_val) == (48, 16)
    assert sum(int(x.shape[0]) for x, _ in ds.train) == 48
    assert sum(int(x.shape[0]) for x, _ in ds.val) == 16
    assert sum(int(x.shape[0]) for x, _ in ds.test) == 32


@pytest.mark.realdata
def test_real_metadata(real_data_dir):
    info = data.load_info("mnist", real_data_dir)
    assert (info.num_train, info.num_test, info.image_shape) == (60_000, 10_000, (28, 28, 1))
    assert info.class_names == tuple(str(i) for i in range(10))


def test_train_pipeline_is_keyed_by_epoch(fake_data_dir):
    def first_batches(ds, n=2):
        return [(x.numpy(), y.numpy()) for (x, y), _ in zip(ds.train, range(n))]

    ds = data.load_datasets(data.load_info("cifar10", fake_data_dir), batch_size=16, val_split=0.25, seed=4)
    zero = first_batches(ds)
    ds.set_epoch(1)
    one = first_batches(ds)
    ds.set_epoch(0)
    again = first_batches(ds)
    # A fresh pipeline (a resumed process) keyed to epoch 1 gives epoch 1's batches.
    fresh = data.load_datasets(data.load_info("cifar10", fake_data_dir), batch_size=16, val_split=0.25, seed=4)
    fresh.set_epoch(1)
    for (x0, y0), (x1, y1), (xa, ya), (xf, yf) in zip(zero, one, again, first_batches(fresh)):
        np.testing.assert_array_equal(x0, xa)
        np.testing.assert_array_equal(y0, ya)
        np.testing.assert_array_equal(x1, xf)
        np.testing.assert_array_equal(y1, yf)
    assert not np.array_equal(zero[0][0], one[0][0])


def test_augmentation_layers_draw_independent_numbers():
    import tensorflow as tf

    # Equal seeds in RandomTranslation and RandomFlip would tie flips to vertical shifts.
    images = np.zeros((256, 32, 32, 3), "float32")
    images[:, 16, 8] = 255.0  # one bright pixel left of centre
    augmented = data.make_augmentation("crop_flip", seed=0)(tf.constant(images), training=True)
    out = keras.ops.convert_to_numpy(augmented)  # a torch tensor, on the GPU where there is one
    rows, cols = [], []
    for image in out[..., 0]:
        found = np.argwhere(image == 255.0)
        if len(found):
            rows.append(found[0][0] - 16)
            cols.append(found[0][1])
    flipped = np.array(cols) > 16
    shifted_down = np.array(rows) > 0
    assert 0.3 < flipped.mean() < 0.7
    # Independent draws: a flip tells little about the vertical shift.
    assert abs(np.corrcoef(flipped, shifted_down)[0, 1]) < 0.3
