"""User-style digit drawings, generated: dark pen strokes on light paper, 200-600 px RGB, off-centre.

Each digit is a few hand-style strokes (polylines and arcs in a unit box, y pointing
down), then randomly rotated, sheared, stretched and wobbled, drawn with a round pen
of random width at a random size and place, like a person drawing in a paint program
or on paper. No dataset image is used.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw


def _arc(cx, cy, rx, ry, a0, a1, n=40):
    """Points on an ellipse from angle a0 to a1 (degrees; 0 = right, 90 = down)."""
    return [(cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
            for a in np.linspace(a0, a1, n)]


#: Stroke templates per digit: a list of variants, each a list of strokes (point lists).
TEMPLATES = {
    0: [[_arc(0.5, 0.5, 0.3, 0.48, -90, 275)]],
    1: [[[(0.5, 0.0), (0.5, 1.0)]], [[(0.33, 0.18), (0.52, 0.0), (0.52, 1.0)]]],
    2: [[_arc(0.5, 0.28, 0.3, 0.27, 190, 390) + [(0.18, 1.0), (0.85, 1.0)]]],
    3: [[_arc(0.47, 0.26, 0.26, 0.25, 200, 450) + _arc(0.47, 0.75, 0.3, 0.25, 270, 520)]],
    4: [[[(0.62, 0.0), (0.12, 0.66), (0.88, 0.66)], [(0.64, 0.3), (0.64, 1.0)]],
        [[(0.2, 0.0), (0.16, 0.56), (0.84, 0.56)], [(0.74, 0.0), (0.74, 1.0)]]],
    5: [[[(0.8, 0.0), (0.3, 0.0), (0.26, 0.44)] + _arc(0.48, 0.68, 0.3, 0.3, 235, 510)]],
    6: [[[(0.72, 0.0), (0.48, 0.18), (0.3, 0.45)] + _arc(0.5, 0.72, 0.26, 0.27, 195, -165)]],
    7: [[[(0.12, 0.0), (0.88, 0.0), (0.42, 1.0)]]],
    8: [[_arc(0.5, 0.26, 0.22, 0.25, 90, 450), _arc(0.5, 0.75, 0.28, 0.25, -90, 270)]],
    9: [[_arc(0.48, 0.3, 0.27, 0.29, 0, 360) + [(0.75, 0.62), (0.7, 1.0)]]],
}


def draw_digit(digit: int, rng: np.random.Generator) -> Image.Image:
    """One RGB drawing of ``digit``: dark strokes on light paper, 200-600 px a side, off-centre."""
    variants = TEMPLATES[digit]
    strokes = variants[rng.integers(len(variants))]
    angle = math.radians(rng.uniform(-12, 12))
    shear = rng.uniform(-0.25, 0.25)
    stretch = rng.uniform(0.75, 1.25)
    width, height = (int(v) for v in rng.integers(200, 601, size=2))
    size = rng.uniform(0.35, 0.75) * min(width, height)  # digit height in pixels
    pen = max(2, int(size * rng.uniform(0.05, 0.13)))

    def transform(x, y):
        x, y = (x - 0.5) * 0.7 * stretch + shear * (y - 0.5), y - 0.5
        return (x * math.cos(angle) - y * math.sin(angle), x * math.sin(angle) + y * math.cos(angle))

    paths = []
    for stroke in strokes:
        wobble = rng.normal(0, 0.012, size=(len(stroke), 2))
        paths.append([transform(x + dx, y + dy) for (x, y), (dx, dy) in zip(stroke, wobble)])
    xs = [p[0] for path in paths for p in path]
    ys = [p[1] for path in paths for p in path]
    span_x, span_y = (max(xs) - min(xs)) * size, (max(ys) - min(ys)) * size
    margin = pen + 2
    left = rng.uniform(margin, max(margin + 1, width - span_x - margin))
    top = rng.uniform(margin, max(margin + 1, height - span_y - margin))
    paper = int(rng.integers(215, 256))
    ink = int(rng.integers(0, 70))
    im = Image.new("RGB", (width, height), (paper, paper, max(0, paper - int(rng.integers(0, 20)))))
    draw = ImageDraw.Draw(im)
    for path in paths:
        pts = [(left + (x - min(xs)) * size, top + (y - min(ys)) * size) for x, y in path]
        draw.line(pts, fill=(ink, ink, ink), width=pen, joint="curve")
        for x, y in (pts[0], pts[-1]):
            draw.ellipse((x - pen / 2, y - pen / 2, x + pen / 2, y + pen / 2), fill=(ink, ink, ink))
    return im


def drawing_set(per_digit: int = 20, seed: int = 0) -> list[tuple[Image.Image, int]]:
    """``per_digit`` drawings of each digit 0-9, as ``(image, label)`` pairs."""
    rng = np.random.default_rng(seed)
    return [(draw_digit(d, rng), d) for _ in range(per_digit) for d in range(10)]
