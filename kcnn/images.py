"""Reading real images and bringing them to a model's input spec (PIL + NumPy only).

Rules (also printed by ``kcnn predict --help``):

1. Read with PIL (PNG, JPEG, BMP, GIF first frame, WebP, TIFF...), apply the EXIF
   orientation, refuse images above :data:`MAX_PIXELS` (decompression-bomb guard).
2. Modes: transparency (RGBA, LA, P with transparency) is composited on white;
   ``1``, ``L``, ``P``, ``CMYK`` convert through PIL; 16/32-bit gray (``I;16``,
   ``I``, ``F``) is scaled to 0..255 by its value range.
3. Colour models (C = 3): convert to RGB, centre-crop to the model's aspect
   ratio, resize to H x W (bicubic, antialiased).
4. Gray models (C = 1) of digits (``digit_style=True``, MNIST): prepared as MNIST
   itself was (LeCun et al.): light-on-dark ink (inverted when the background
   is light), cropped to the ink's bounding box, scaled to fit 20x20 keeping
   the aspect ratio, placed in 28x28 by its centre of mass. Thin strokes of
   large drawings are thickened first so they survive the downscale. An image
   already in MNIST form (H x W gray on a dark background) passes unchanged.
5. Other gray models (Fashion-MNIST): gray, inverted when the background is
   light, fitted into H x W keeping the aspect ratio on black.
"""

from __future__ import annotations

import glob
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from kcnn.errors import DataError

#: Largest image accepted, in pixels (PIL's own default guard is ~89 Mpx).
MAX_PIXELS = 50_000_000
#: File extensions treated as images when a folder is searched.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageError(DataError):
    """An input image cannot be read or used; the message names the file."""


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open an image file as an ``RGB`` or ``L`` PIL image, EXIF orientation applied.

    Raises:
        ImageError: missing, empty, not an image, truncated, or larger than
            ``max_pixels``. The message starts with the path.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_file() and path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    return _open(path, str(path), max_pixels)


def decode_image(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """:func:`read_image` of the bytes of an image file (an upload): the same checks and result.

    Raises:
        ImageError: empty, not an image, truncated, or larger than ``max_pixels``; the message
            starts with ``name``.
    """
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    return _open(io.BytesIO(data), name, max_pixels)


def _open(source, name: str, max_pixels: int) -> Image.Image:
    try:
        with Image.open(source) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise ImageError(f"{name}: {width}x{height} pixels is above the limit of "
                                 f"{max_pixels:,} pixels (decompression-bomb guard)")
            im.seek(0)
            im.load()
            im = ImageOps.exif_transpose(im)
            return to_rgb_or_gray(im)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = "truncated or corrupt image data" if "truncated" in str(e).lower() else str(e)
        if isinstance(e, Image.UnidentifiedImageError):
            reason = "not an image PIL can read"
        raise ImageError(f"{name}: {reason}") from None


def to_rgb_or_gray(im: Image.Image) -> Image.Image:
    """Normalize any PIL mode to ``L`` (gray sources) or ``RGB`` (colour sources).

    Transparency is composited on white; 16/32-bit and float gray are scaled
    to 0..255 by their min..max range.
    """
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return Image.fromarray(np.round(a).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba).convert("L" if im.mode.startswith("L") else "RGB")
    if im.mode in ("1", "L"):
        return im.convert("L")
    return im.convert("RGB")


def _border_level(a: np.ndarray) -> float:
    """Median of the outermost pixel ring: the background's gray level."""
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    return float(np.median(border))


def _light_on_dark(gray: np.ndarray) -> np.ndarray:
    """Float gray with ink bright on a dark background (inverted if the border is light)."""
    a = gray.astype(np.float32)
    return 255.0 - a if _border_level(a) > 127 else a


def prepare_digit(im: Image.Image, size: int = 28, box: int = 20) -> np.ndarray:
    """Bring a drawing or photo of one digit into MNIST form, ``(size, size)`` uint8.

    Follows LeCun et al.'s description of MNIST: ink light on dark, cropped to
    its bounding box, scaled to fit ``box`` x ``box`` keeping the aspect ratio
    (antialiased, so edges are gray), centred in ``size`` x ``size`` by the
    centre of mass. An image already ``size`` x ``size`` on a dark background
    is returned unchanged.
    """
    gray = np.asarray(im.convert("L"))
    if gray.shape == (size, size) and _border_level(gray.astype(np.float32)) <= 127:
        return gray.copy()
    a = _light_on_dark(gray)
    a = np.clip(a - _border_level(a), 0, None)  # background to 0 (uneven paper, photos)
    peak = float(a.max())
    if peak <= 0:
        return np.zeros((size, size), np.uint8)
    a *= 255.0 / peak
    ink = a > 64
    if not ink.any():
        ink = a > 0
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    a = a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    scale = box / max(a.shape)
    crop = Image.fromarray(a.astype(np.uint8), "L")
    # MNIST strokes are ~2-3 px wide at 28x28: thicken thin strokes before shrinking.
    width = _stroke_width(ink)
    wanted = 2.0 / scale
    if width < wanted:
        grow = int(round(wanted - width))  # a MaxFilter of odd size k widens strokes by k - 1
        if grow >= 2:
            crop = crop.filter(ImageFilter.MaxFilter(grow + 1 if grow % 2 == 0 else grow))
    new = (max(1, round(a.shape[1] * scale)), max(1, round(a.shape[0] * scale)))
    small = np.asarray(crop.resize(new, Image.Resampling.LANCZOS), dtype=np.float32).clip(0, 255)
    out = np.zeros((size, size), np.float32)
    total = small.sum()
    if total > 0:
        ys, xs = np.indices(small.shape)
        cy, cx = (ys * small).sum() / total, (xs * small).sum() / total
    else:
        cy, cx = (small.shape[0] - 1) / 2, (small.shape[1] - 1) / 2
    top, left = int(round(size / 2 - 0.5 - cy)), int(round(size / 2 - 0.5 - cx))
    top = min(max(top, 0), size - small.shape[0])
    left = min(max(left, 0), size - small.shape[1])
    out[top:top + small.shape[0], left:left + small.shape[1]] = small
    return np.round(out).astype(np.uint8)


def _stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width of a binary ink mask, in pixels: 2 * area / perimeter."""
    area = int(ink.sum())
    if area == 0:
        return 0.0
    padded = np.pad(ink, 1)
    inner = padded[1:-1, 1:-1]
    edge = inner & ~(padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    return 2.0 * area / max(int(edge.sum()), 1)


def fit_gray(im: Image.Image, height: int, width: int) -> np.ndarray:
    """Gray, light-on-dark, fitted into ``height`` x ``width`` keeping aspect, on black. uint8."""
    gray = np.asarray(im.convert("L"))
    if gray.shape == (height, width) and _border_level(gray.astype(np.float32)) <= 127:
        return gray.copy()
    a = Image.fromarray(np.round(_light_on_dark(gray)).astype(np.uint8), "L")
    a = ImageOps.contain(a, (width, height), Image.Resampling.LANCZOS)
    out = Image.new("L", (width, height), 0)
    out.paste(a, ((width - a.width) // 2, (height - a.height) // 2))
    return np.asarray(out)


def fit_color(im: Image.Image, height: int, width: int) -> np.ndarray:
    """RGB, centre-cropped to the target aspect ratio, resized to ``height`` x ``width``. uint8."""
    rgb = im.convert("RGB")
    if rgb.size == (width, height):
        return np.asarray(rgb).copy()
    return np.asarray(ImageOps.fit(rgb, (width, height), Image.Resampling.BICUBIC))


def to_model_input(im: Image.Image, input_shape: tuple[int, int, int],
                   digit_style: bool = False) -> np.ndarray:
    """Bring an image to a model's input spec: ``input_shape`` ``(H, W, C)`` uint8.

    Args:
        im: a PIL image (any mode; see :func:`to_rgb_or_gray`).
        input_shape: ``(H, W, C)`` with C in {1, 3}.
        digit_style: for gray models of digits (MNIST): apply :func:`prepare_digit`.

    Raises:
        ImageError: an input shape kcnn cannot feed (C not 1 or 3).
    """
    height, width, channels = input_shape
    im = to_rgb_or_gray(im)
    if channels == 3:
        return fit_color(im, height, width)
    if channels != 1:
        raise ImageError(f"model input has {channels} channels; kcnn feeds 1 (gray) or 3 (RGB)")
    if digit_style:
        a = prepare_digit(im, size=height, box=round(height * 20 / 28))
        if a.shape != (height, width):
            a = np.asarray(Image.fromarray(a).resize((width, height), Image.Resampling.LANCZOS))
    else:
        a = fit_gray(im, height, width)
    return a[..., None]


def find_images(paths) -> tuple[list[Path], list[str]]:
    """Expand files, folders (recursively, by image extension) and glob patterns.

    Returns:
        ``(files, errors)``: the files in the order given (folders sorted), and
        one message per path that matched nothing.
    """
    files, errors = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file()
                           and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                errors.append(f"{path}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            files.extend(found)
        elif path.exists():
            files.append(path)
        elif any(ch in str(raw) for ch in "*?["):
            matched = sorted(Path(p) for p in glob.glob(str(raw), recursive=True) if Path(p).is_file())
            if not matched:
                errors.append(f"{raw}: pattern matched no files")
            files.extend(matched)
        else:
            errors.append(f"{path}: no such file or folder")
    return files, errors
