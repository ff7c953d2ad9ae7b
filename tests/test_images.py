"""kcnn.images: every image mode to the model's input, EXIF, transparency, MNIST-style digit preparation."""

import numpy as np
import pytest
from PIL import Image

from drawings import drawing_set
from kcnn.images import ImageError, prepare_digit, read_image, to_model_input


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "CMYK"])
@pytest.mark.parametrize("shape", [(32, 32, 3), (28, 28, 1)])
def test_every_mode_reaches_the_model_spec(mode, shape):
    rng = np.random.default_rng(1)
    im = Image.fromarray(rng.integers(0, 256, (45, 61, 3), dtype=np.uint8)).convert(mode)
    a = to_model_input(im, shape, digit_style=shape[-1] == 1)
    assert a.shape == shape and a.dtype == np.uint8


def test_transparency_is_composited_on_white():
    im = Image.new("RGBA", (32, 32), (255, 0, 0, 0))  # fully transparent red
    assert np.all(to_model_input(im, (32, 32, 3)) == 255)


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (60, 20), (255, 255, 255))
    im.paste((0, 0, 0), (0, 0, 10, 20))  # black band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    im.save(tmp_path / "o.jpg", exif=exif, quality=95)
    upright = read_image(tmp_path / "o.jpg")
    assert upright.size == (20, 60)
    a = np.asarray(upright.convert("L"))
    assert a[:10].mean() < 60 and a[-10:].mean() > 200  # the band is now on top


def test_mnist_form_images_pass_unchanged():
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    assert np.array_equal(prepare_digit(Image.fromarray(digit)), digit)


def test_digit_preparation_follows_the_mnist_recipe():
    im, _ = drawing_set(per_digit=1, seed=3)[7]  # a 7, dark on light, off-centre
    a = prepare_digit(im).astype(float)
    assert a.shape == (28, 28) and a[0].max() == 0 and a[:, 0].max() == 0  # dark background
    rows, cols = np.flatnonzero(a.max(1) > 0), np.flatnonzero(a.max(0) > 0)
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 21  # fits the 20x20 box
    ys, xs = np.indices(a.shape)
    com = ((ys * a).sum() / a.sum(), (xs * a).sum() / a.sum())
    assert abs(com[0] - 13.5) <= 1 and abs(com[1] - 13.5) <= 1  # centred by centre of mass


def test_image_error_messages_name_the_file(tmp_path):
    with pytest.raises(ImageError, match=r"^.*nope\.png: no such file$"):
        read_image(tmp_path / "nope.png")
