"""The demo extent's LCZ map on another QGIS equals this QGIS's, cell for cell.

``make test-qgis-3.40`` (and ``-3.44``) runs this twice in one go: on the host's QGIS with ``DF4LCZ_MAP_KEEP=DIR``
(the map is kept there: the reference) and then in a Debian root on the other QGIS, from the plugin zip, with
``DF4LCZ_REFERENCE_MAP=DIR``: there its maps must equal the reference. Without either it checks the map alone."""

import os
import shutil
from pathlib import Path

import pytest
from osgeo import gdal, osr

from conftest import run_qgis_process

EXTENT = "-75.72,-75.52,37.59,37.75 [EPSG:4326]"  # scripts/demo.py's
KEEP, REFERENCE = os.environ.get("DF4LCZ_MAP_KEEP"), os.environ.get("DF4LCZ_REFERENCE_MAP")


@pytest.fixture(scope="module")
def stack(qgis_env, s2_band_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("stack") / "stack.tif"
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:sentinel2stack", {"INPUT": s2_band_dir, "OUTPUT": path})
    assert rc == 0, text
    return path


@pytest.mark.parametrize("backend", ["openvino", "pytorch"])
def test_demo_map_equals_the_reference(qgis_env, stack, tmp_path, backend):
    names = {"OUTPUT": f"lcz_{backend}.tif", "PROBABILITIES": f"p_{backend}.tif"}
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {
        "SENTINEL2": stack, "EXTENT": EXTENT, "RESOLUTION": 100, "BACKEND": backend,
        **{key: tmp_path / name for key, name in names.items()}})
    assert rc == 0, text
    codes = gdal.Open(str(tmp_path / names["OUTPUT"])).ReadAsArray()
    assert codes.shape == (179, 178) and codes.min() >= 1 and codes.max() <= 17
    if KEEP:
        Path(KEEP).mkdir(parents=True, exist_ok=True)
        for name in names.values():
            shutil.copy(tmp_path / name, Path(KEEP) / name)
    if REFERENCE:
        for name in names.values():
            ours, theirs = gdal.Open(str(tmp_path / name)), gdal.Open(str(Path(REFERENCE) / name))
            assert ours.GetGeoTransform() == theirs.GetGeoTransform()
            assert osr.SpatialReference(ours.GetProjection()).IsSame(osr.SpatialReference(theirs.GetProjection()))
            a, b = ours.ReadAsArray(), theirs.ReadAsArray()
            assert a.dtype == b.dtype and a.shape == b.shape
            differ = a != b
            assert not differ.any(), f"{name}: {differ.sum()} of {differ.size} values differ from the reference"
