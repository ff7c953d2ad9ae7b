"""Write a TFDS image dataset out as a folder of photos, to try ``kcnn train FOLDER`` on real images.

The folder is laid out as Ultralytics' and TFDS ImageFolder's ``ROOT/train/CLASS/*`` and
``ROOT/test/CLASS/*`` (``--layout classes``: ``ROOT/CLASS/*``, which kcnn splits itself). To be
like a user's own photos rather than a tidy dataset, each image is upscaled to a random size (a
side of 32 to 96 pixels, an aspect ratio of 3:4 to 4:3) and saved as JPEG or PNG; a share is
saved gray, RGBA or palette, and a few files are broken on purpose (truncated, not an image,
empty), which training must skip and name.

Write it outside the project (the data must not be committed):

    python scripts/make_photo_folder.py cifar10 /tmp/cifar10_photos --data-dir ../shared/tfds
    kcnn train /tmp/cifar10_photos --image-size 32 32 --epochs 5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

#: Shares of the written images by mode; the rest are RGB.
MODES = {"L": 0.05, "RGBA": 0.05, "P": 0.05}
#: Broken files written per split: (name, bytes).
BROKEN = (("truncated.jpg", None), ("not_an_image.png", b"this is text, not a PNG"), ("empty.jpg", b""))


def write_image(image: np.ndarray, path: Path, rng: np.random.Generator) -> Path:
    """Save one ``(H, W, C)`` uint8 image at a random size, format and mode; returns the path written."""
    side = int(rng.integers(32, 97))
    aspect = float(rng.uniform(0.75, 4 / 3))
    size = (side, max(16, round(side * aspect)))  # (width, height)
    im = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).resize(size, Image.Resampling.BICUBIC)
    draw = rng.random()
    for mode, share in MODES.items():
        if draw < share:
            im = im.convert(mode) if mode != "P" else im.convert("RGB").quantize(256)
            break
        draw -= share
    suffix = ".png" if im.mode in ("RGBA", "P") or rng.random() < 0.5 else ".jpg"
    path = path.with_suffix(suffix)
    im.save(path, quality=90) if suffix == ".jpg" else im.save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="TFDS name, e.g. cifar10")
    parser.add_argument("root", type=Path, help="folder to write (outside the project)")
    parser.add_argument("--data-dir", default=None, help="TFDS data_dir")
    parser.add_argument("--layout", choices=("splits", "classes"), default="splits")
    parser.add_argument("--limit", type=int, default=None, help="at most this many images per split")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from kcnn import data

    info = data.load_info(args.dataset, args.data_dir)
    rng = np.random.default_rng(args.seed)
    for split in ("train", "test"):
        images, labels = data.load_split_arrays(info, split if args.limit is None else f"{split}[:{args.limit}]")
        base = args.root / split if args.layout == "splits" else args.root
        for name in info.class_names:
            (base / name).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels)):
            write_image(image, base / info.class_names[label] / f"{split}_{i:05d}", rng)
        for (name, content), class_name in zip(BROKEN, info.class_names):
            path = base / class_name / f"{split}_{name}"
            if content is None:  # a real JPEG cut in half
                good = next((base / class_name).glob("*.jpg"))
                content = good.read_bytes()[: good.stat().st_size // 2]
            path.write_bytes(content)
        print(f"{split}: {len(images):,} images and {len(BROKEN)} broken files in {base}")


if __name__ == "__main__":
    main()
