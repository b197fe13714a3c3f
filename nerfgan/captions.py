"""Captioned image grids: every multi-tile picture nerfgan writes says what its columns, rows and tiles are,
and (in a footer) how to read it, e.g. the scale of a difference image.

One look everywhere: dark text on a white strip, Pillow's built-in default font (``ImageFont.load_default()``:
no font file, no download), tiles GAP white pixels apart. numpy and Pillow only.

    img = caption_grid([[a, b, difference(x, y)[0]]], columns=["teacher", "student", "difference"],
                       rows=["seed 3"], footer=difference_note("student", "teacher"))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

DIFF_GAIN = 4.0  # difference images: |a - b| of [-1, 1] images x DIFF_GAIN, then x 127.5 to 0..255, clipped
INK = (20, 20, 20)  # text colour
PAPER = 255  # strips, gaps and empty cells
GAP = 2  # white pixels between tiles
PAD = 4  # white pixels around each text block


class GridShapeError(ValueError):
    """The tiles of a grid differ in shape or dtype, or a caption list does not match the grid."""


def difference(a: np.ndarray, b: np.ndarray, gain: float = DIFF_GAIN) -> np.ndarray:
    """uint8 (B, H, W, 3) image of |a - b| for float images a, b (B, 3, H, W) in [-1, 1] (clipped first):
    |a - b| x gain x 127.5, clipped to 255, so black = equal and white = a difference of 2 / gain or more."""
    d = np.abs(np.clip(np.asarray(a, np.float32), -1, 1) - np.clip(np.asarray(b, np.float32), -1, 1))
    return np.moveaxis(np.rint(np.clip(d * gain * 127.5, 0, 255)).astype(np.uint8), -3, -1)


def difference_note(a: str, b: str, gain: float = DIFF_GAIN) -> str:
    """The footer of a grid holding ``difference(a, b)`` tiles: the one scale every nerfgan grid uses."""
    return f"difference: |{a} - {b}| x{gain:g} on [-1, 1] images; black = 0, white = {2 / gain:g} or more"


@lru_cache(maxsize=1)
def _font() -> Any:
    from PIL import ImageFont

    return ImageFont.load_default()


def _line_height() -> int:
    return int(_font().getbbox("Ayg|")[3]) + 3


def _wrap(text: str, width: float) -> list[str]:
    """Lines of ``text`` at most ``width`` pixels wide, broken at spaces and at its own newlines (a single
    word wider than ``width`` keeps a line of its own)."""
    font, lines = _font(), []
    for paragraph in text.split("\n"):
        words = paragraph.split(" ")
        line = words[0]
        for word in words[1:]:
            if font.getlength(line + " " + word) <= width:
                line += " " + word
            else:
                lines.append(line)
                line = word
        lines.append(line)
    return lines


def _width(lines: Sequence[str]) -> int:
    return max((int(np.ceil(_font().getlength(s))) for s in lines), default=0)


@dataclass(frozen=True)
class Layout:
    """Where caption_grid puts everything, in pixels: a ``top`` strip of column titles, a ``left`` column of
    row labels, each tile followed by a ``below`` strip of its own label, a ``bottom`` footer strip."""

    rows: int
    cols: int
    tile: tuple[int, int]  # (H, W) of every tile
    left: int  # width of the row-label column; 0 without row labels
    top: int  # height of the column-title strip; 0 without titles
    below: int  # height of the label strip under each tile; 0 without tile labels
    bottom: int  # height of the footer strip; 0 without a footer

    @property
    def grid(self) -> tuple[int, int]:
        """(height, width) of the tiles with their label strips and gaps, without the outer strips."""
        h, w = self.tile
        return self.rows * (h + self.below + GAP) - GAP, self.cols * (w + GAP) - GAP

    @property
    def shape(self) -> tuple[int, int, int]:
        """(height, width, 3) of the whole captioned image."""
        gh, gw = self.grid
        return self.top + gh + self.bottom, self.left + gw, 3

    def origin(self, r: int, c: int) -> tuple[int, int]:
        """(y, x) of the top-left pixel of tile (r, c)."""
        h, w = self.tile
        return self.top + r * (h + self.below + GAP), self.left + c * (w + GAP)


def _tiles(tiles: Sequence[Sequence[np.ndarray | None]]) -> tuple[list[list[np.ndarray | None]], tuple[int, int]]:
    grid = [list(row) for row in tiles]
    cols = max((len(r) for r in grid), default=0)
    filled = [t for r in grid for t in r if t is not None]
    if not filled:
        raise GridShapeError("a grid needs at least one tile")
    first = np.asarray(filled[0])
    for t in filled:
        t = np.asarray(t)
        if t.dtype != np.uint8 or t.ndim != 3 or t.shape[2] != 3 or t.shape != first.shape:
            raise GridShapeError(f"tiles must all be uint8 {first.shape} (H, W, 3), got {t.dtype} {t.shape}")
    return [r + [None] * (cols - len(r)) for r in grid], (first.shape[0], first.shape[1])


def layout(tiles: Sequence[Sequence[np.ndarray | None]], columns: Sequence[str] = (), rows: Sequence[str] = (),
           footer: str | None = None, labels: Sequence[Sequence[str]] | None = None) -> Layout:
    """The Layout caption_grid gives these arguments (see there)."""
    grid, (h, w) = _tiles(tiles)
    n_rows, n_cols = len(grid), len(grid[0])
    if columns and len(columns) != n_cols:
        raise GridShapeError(f"{len(columns)} column titles for {n_cols} columns")
    if rows and len(rows) != n_rows:
        raise GridShapeError(f"{len(rows)} row labels for {n_rows} rows")
    if labels is not None and (len(labels) > n_rows or any(len(r) > n_cols for r in labels)):
        raise GridShapeError(f"tile labels for more than the {n_rows} x {n_cols} tiles")
    line = _line_height()
    top = max((len(_wrap(t, w)) for t in columns), default=0) * line + 2 * PAD if columns else 0
    left = _width([s for r in rows for s in r.split("\n")]) + 2 * PAD if rows else 0
    below = (max((len(_wrap(s, w)) for r in labels for s in r), default=0) * line + PAD) if labels else 0
    width = left + n_cols * (w + GAP) - GAP
    bottom = len(_wrap(footer, width - 2 * PAD)) * line + 2 * PAD if footer else 0
    return Layout(n_rows, n_cols, (h, w), left, top, below, bottom)


def caption_grid(tiles: Sequence[Sequence[np.ndarray | None]], columns: Sequence[str] = (), rows: Sequence[str] = (),
                 footer: str | None = None, labels: Sequence[Sequence[str]] | None = None) -> np.ndarray:
    """One uint8 (height, width, 3) image of a grid of tiles with its captions.

    tiles: rows x cols of uint8 (H, W, 3) images, all of one shape; None (or a short row) leaves a white cell.
    columns: one title per column, centred above it (wrapped to W). rows: one label per row, at its left
    (a newline starts a second line). labels: optional rows x cols text under each tile (e.g. "seed 7").
    footer: optional text across the bottom, wrapped to the image width. Tile pixels are copied unchanged;
    ``layout(...)`` with the same arguments says where everything is.
    """
    from PIL import Image, ImageDraw

    grid, _ = _tiles(tiles)
    lay = layout(tiles, columns, rows, footer, labels)
    (h, w), line, font = lay.tile, _line_height(), _font()
    canvas = Image.new("RGB", (lay.shape[1], lay.shape[0]), (PAPER,) * 3)
    draw = ImageDraw.Draw(canvas)

    def text(x: float, y: float, lines: Sequence[str], width: float | None = None) -> None:
        for k, s in enumerate(lines):  # centred in ``width`` when given, else left-aligned at x
            dx = 0.0 if width is None else max(0.0, (width - font.getlength(s)) / 2)
            draw.text((x + dx, y + k * line), s, fill=INK, font=font)

    for c, title in enumerate(columns):
        lines = _wrap(title, w)
        text(lay.origin(0, c)[1], lay.top - PAD - len(lines) * line, lines, w)
    for r, label in enumerate(rows):
        lines = label.split("\n")
        text(PAD, lay.origin(r, 0)[0] + (h - len(lines) * line) / 2, lines)
    for r, row_labels in enumerate(labels or ()):
        for c, label in enumerate(row_labels):
            y, x = lay.origin(r, c)
            text(x, y + h + PAD // 2, _wrap(label, w), w)
    if footer:
        text(PAD, lay.shape[0] - lay.bottom + PAD, _wrap(footer, lay.shape[1] - 2 * PAD))
    out = np.array(canvas)
    for r, row in enumerate(grid):
        for c, tile in enumerate(row):
            if tile is not None:
                y, x = lay.origin(r, c)
                out[y:y + h, x:x + w] = tile
    return out
