"""Depth pictures: a colour scale with its range in world units, empty pixels marked, at the size asked for."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nerfgan.captions import layout
from nerfgan.depth_picture import _CHECKER, colour_scale, depth_note, depth_picture


def _disc(n: int) -> tuple[np.ndarray, np.ndarray]:
    """A disc whose depth grows from 2.5 (left) to 2.7 (right), on an empty background that carries the
    near-zero-weight depths of a volume renderer (here: values between 0 and 3.3)."""
    yy, xx = np.mgrid[0:n, 0:n] / (n - 1)
    inside = (yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.3 ** 2
    depth = np.where(inside, 2.5 + 0.2 * xx, 3.3 * xx)  # a band in the background, as the ratio depth gives
    return depth, inside.astype(np.float64)


def _image_part(img: np.ndarray, n: int) -> np.ndarray:
    lay = layout([[np.zeros((n + 12, n, 3), np.uint8)]], footer="x")
    y, x = lay.origin(0, 0)
    return img[y:y + n, x:x + n]


def test_empty_pixels_are_a_checker_and_surfaces_span_the_scale():
    depth, opacity = _disc(64)
    img = depth_picture(depth, opacity)
    part = _image_part(img, 64)
    empty = opacity < 0.5
    # the background's meaningless depths leave no trace: only the two checker greys
    assert set(np.unique(part[empty])) <= set(_CHECKER)
    # covered pixels are on the colour scale: nearest (left edge of the disc) yellow, farthest purple
    hit = ~empty
    cols = np.where(hit.any(0))[0]
    left = part[hit & (np.arange(64)[None] == cols[0])][0]
    right = part[hit & (np.arange(64)[None] == cols[-1])][0]
    assert np.abs(left.astype(int) - colour_scale(np.array(1.0))).max() <= 2
    assert np.abs(right.astype(int) - colour_scale(np.array(0.0))).max() <= 2


def test_resizing_takes_no_depth_from_the_background():
    depth, opacity = _disc(32)
    img = depth_picture(depth, opacity, size=128)
    part = _image_part(img, 128)
    big_d, big_o = _disc(128)
    # every covered pixel at 128 px has a colour of the scale between the disc's own depth ends
    scale = colour_scale(np.linspace(0, 1, 256)).astype(int)
    hit = big_o > 0.5
    inner = hit & ((((np.mgrid[0:128, 0:128] / 127 - 0.5) ** 2).sum(0) ** 0.5) < 0.27)
    px = part[inner].astype(int)
    dist = np.abs(px[:, None] - scale[None]).max(-1).min(-1)
    assert dist.max() <= 3


def test_the_footer_gives_the_range_of_the_surfaces_in_world_units():
    depth, opacity = _disc(48)
    note = depth_note(depth, opacity)
    # the ends are the disc's (2.5 + 0.2 x over its columns), not the background's 0 .. 3.3
    cols = np.where((opacity > 0.5).any(0))[0] / 47
    assert f"near {2.5 + 0.2 * cols[0]:.3f}" in note and f"far {2.5 + 0.2 * cols[-1]:.3f}" in note
    assert "checker: empty" in note
    assert "nothing in view" in depth_note(depth, np.zeros_like(opacity))


def test_nothing_in_view_is_all_checker():
    img = depth_picture(np.full((16, 16), 3.3), np.zeros((16, 16)))
    part = _image_part(img, 16)
    assert set(np.unique(part)) <= set(_CHECKER)


def test_teacher_render_writes_the_depth_at_the_image_size(tmp_path, capsys):
    from nerfgan.cli import main

    out, depth = tmp_path / "v.png", tmp_path / "d.png"
    with pytest.raises(SystemExit) as e:
        main(["teacher", "render", "--teacher", "tiny", "--seed", "0", "--pose", "25,10", "-o", str(out),
              "--depth", str(depth)])
    assert e.value.code == 0
    printed = capsys.readouterr().out
    img = np.asarray(Image.open(depth))
    part = _image_part(img, 128)  # the 64 px volume render, shown at the 128 px image size
    # the left edge is background: checker only (the old picture had a grey band of values 54 -> 0 there)
    assert set(np.unique(part[:, :12])) <= set(_CHECKER)
    assert "world units" in printed
