"""nerfgan.captions: the caption strips of every grid nerfgan writes, and the one difference scale."""

from __future__ import annotations

import numpy as np
import pytest

from nerfgan.captions import (DIFF_GAIN, GAP, PAPER, GridShapeError, caption_grid, difference, difference_note,
                              layout)

RES = 128  # the tiny models' tile size: the smallest text must still fit it


def tiles(rows: int = 2, cols: int = 3, res: int = RES) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return [[rng.integers(0, 256, (res, res, 3), dtype=np.uint8) for _ in range(cols)] for _ in range(rows)]


def ink(region: np.ndarray) -> np.ndarray:
    """(y, x) of the text pixels of a strip region (H, W, 3): clearly darker than the white paper."""
    return np.argwhere(region.min(axis=-1) < 128)


def test_caption_grid_adds_strips_with_text_and_keeps_every_tile():
    t = tiles()
    args = dict(columns=["teacher", "engine", "difference"], rows=["seed 3", "yaw -30 pitch 0"],
                footer=difference_note("engine", "teacher"))
    img, lay = caption_grid(t, **args), layout(t, **args)
    bare = (2 * RES + GAP, 3 * RES + 2 * GAP)
    assert img.dtype == np.uint8 and img.shape == lay.shape
    assert img.shape[0] > bare[0] and img.shape[1] > bare[1] and lay.top > 0 and lay.left > 0 and lay.bottom > 0
    for r in range(2):
        for c in range(3):
            y, x = lay.origin(r, c)
            np.testing.assert_array_equal(img[y:y + RES, x:x + RES], t[r][c])  # tile pixels unchanged
            if c < 2:
                assert (img[y:y + RES, x + RES:x + RES + GAP] == PAPER).all()  # the gap is white
    for c in range(3):  # each column title: ink above its own column, inside the column's width
        x = lay.origin(0, c)[1]
        found = ink(img[:lay.top, x:x + RES])
        assert len(found) > 20 and ink(img[:lay.top, x - GAP:x]).size == 0
    for r in range(2):  # each row label: ink at the left of its row
        y = lay.origin(r, 0)[0]
        assert len(ink(img[y:y + RES, :lay.left])) > 20
    footer = img[-lay.bottom:]
    assert len(ink(footer)) > 100 and footer.shape[1] == img.shape[1]


def test_text_fits_a_128px_tile_and_is_tall_enough_to_read():
    t = tiles(1, 3)
    lay = layout(t, columns=["teacher", "student", "difference"])
    img = caption_grid(t, columns=["teacher", "student", "difference"])
    rows_with_ink = np.unique(ink(img[:lay.top])[:, 0])
    assert 7 <= len(rows_with_ink) <= lay.top - 2  # glyphs at least 7 px tall, inside the strip
    assert lay.top <= 30  # one line: the strip stays small against a 128 px tile


def test_tile_labels_footer_wrapping_and_empty_cells():
    t = [tiles(1, 3)[0], tiles(1, 1)[0]]  # a short second row: its missing cells stay white
    labels = [["seed 0", "seed 1", "seed 2"], ["seed 3"]]
    footer = "yaw 10 pitch 5, truncation 0.7; rendered by nerfgan-run from export " * 3
    img, lay = caption_grid(t, labels=labels, footer=footer), layout(t, labels=labels, footer=footer)
    assert lay.below > 0 and lay.left == 0 and lay.top == 0
    one_line = layout(t, labels=labels, footer="short").bottom
    assert lay.bottom > one_line  # the long footer wraps to the image width
    for r, c in ((0, 0), (0, 2), (1, 0)):
        y, x = lay.origin(r, c)
        assert len(ink(img[y + RES:y + RES + lay.below, x:x + RES])) > 10  # its label under it
    y, x = lay.origin(1, 1)
    assert (img[y:y + RES + lay.below, x:] == PAPER).all()


def test_difference_is_one_scale_stated_in_its_note():
    a = np.zeros((1, 3, 2, 2), np.float32)
    b = a.copy()
    b[..., 0, 1], b[..., 1, 0], b[..., 1, 1] = 0.25, 2 / DIFF_GAIN, 1.5
    d = difference(b, a)
    assert d.shape == (1, 2, 2, 3) and d.dtype == np.uint8
    assert d[0, 0, 0, 0] == 0 and d[0, 0, 1, 0] == 128 and d[0, 1, 0, 0] == 255 and d[0, 1, 1, 0] == 255
    np.testing.assert_array_equal(difference(a, b), d)  # symmetric
    note = difference_note("student", "teacher")
    assert f"x{DIFF_GAIN:g}" in note and f"white = {2 / DIFF_GAIN:g} or more" in note and "|student - teacher|" in note


@pytest.mark.parametrize("bad", [
    dict(tiles=[[np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8)]]),
    dict(tiles=[[np.zeros((8, 8, 3), np.float32)]]),
    dict(tiles=[[None]]),
    dict(tiles=[[np.zeros((8, 8, 3), np.uint8)]], columns=["a", "b"]),
    dict(tiles=[[np.zeros((8, 8, 3), np.uint8)]], rows=["a", "b"]),
])
def test_mismatched_grids_raise(bad):
    with pytest.raises(GridShapeError):
        caption_grid(**bad)
