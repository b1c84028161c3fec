"""The high-resolution stream through real QGIS: ``df4lcz:buildobjectgraphs`` headless on the real Zürich
orthophoto, a fused ``df4lcz:classifylcz`` run, and the bad inputs."""

import numpy as np
import pytest
import torch
from osgeo import gdal, ogr

from df4lcz_plugin.lcz import lcz_raster
from df4lcz_plugin.runtime import assets
from df4lcz_plugin.vhr import sam
from df4lcz_plugin.vhr.graph import build_graph
from df4lcz_plugin.runtime.grid import make_grid
from df4lcz_plugin.models.registry import load_model
from df4lcz_plugin.vhr.imagery import open_vhr, read_patch

from conftest import FAST_AMG, FUSED_EXTENT, MODEL_CARD, ZURICH, raster_copy, run_qgis_process


def _extent(bounds, crs="EPSG:32618"):
    return f"{bounds[0]},{bounds[2]},{bounds[1]},{bounds[3]} [{crs}]"


def test_objects_and_graph_file_headless(qgis_env, tmp_path):
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:buildobjectgraphs", {
        "VHR": ZURICH, "POINTS_PER_SIDE": 8, "CROP_N_LAYERS": 0,
        "OUTPUT": tmp_path / "objects.gpkg", "GRAPHS": tmp_path / "graphs.npz"})
    assert rc == 0, text
    datasource = ogr.Open(str(tmp_path / "objects.gpkg"))  # must outlive its layer (GDAL bindings)
    layer = datasource.GetLayer(0)
    assert layer.GetSpatialRef().GetAuthorityCode(None) == "2056"
    features = list(layer)
    assert 10 <= len(features) <= 2 * sam.MAX_MASKS  # two 320 m patches cover the 437.5 × 300 m image
    for feature in features:
        assert feature.GetGeometryRef().GetArea() == pytest.approx(feature["area_m2"], rel=0.02)
        assert 0 <= feature["r"] <= 1 and 0 <= feature["cx"] <= 1 and feature["pred_iou"] >= 0.88
    graphs = np.load(tmp_path / "graphs.npz")
    assert graphs["x"].shape == (len(features), 5)
    assert graphs["patch_bounds"].shape == (2, 4) and graphs["edge_index"].max() < len(features)
    assert sorted(set(graphs["node_patch"].tolist())) == [0, 1]
    assert '"points_per_side": 8' in str(graphs["settings_json"])


def test_objects_without_graph_file(qgis_env, tmp_path):
    """GRAPHS is optional: without it the polygons are written and no graph file, not even a partial one (it
    failed with "[Errno 16] Device or resource busy: '….partial' -> '.'")."""
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:buildobjectgraphs", {
        "VHR": ZURICH, "POINTS_PER_SIDE": 4, "CROP_N_LAYERS": 0, "OUTPUT": tmp_path / "objects.gpkg"})
    assert rc == 0, text
    assert "GRAPHS" not in result["results"]
    assert ogr.Open(str(tmp_path / "objects.gpkg")).GetLayer(0).GetFeatureCount() > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["objects.gpkg"]


def test_fused_classification(qgis_env, s2_stack, vhr_fixture, fused_model, tmp_path):
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {
        "SENTINEL2": s2_stack, "EXTENT": _extent(FUSED_EXTENT), "VHR": vhr_fixture, "MODEL_FILE": fused_model,
        "OUTPUT": tmp_path / "lcz.tif", "PROBABILITIES": tmp_path / "p.tif", "SOURCE": tmp_path / "source.tif"})
    assert rc == 0, text
    source = gdal.Open(str(tmp_path / "source.tif")).ReadAsArray()
    assert source.shape == (4, 4)
    assert source[0, 0] == lcz_raster.SOURCE_FUSED and (source.ravel()[1:] == lcz_raster.SOURCE_S2).all()
    # Recompute the fused cell independently: P_S2 from the S2 patch, P_VHR from SAM → graph → GCN.
    model = load_model(fused_model)
    ds = gdal.Open(str(s2_stack))
    grid = make_grid(ds.GetGeoTransform(), (ds.RasterXSize, ds.RasterYSize), FUSED_EXTENT, 100)
    top, left = grid.patch_origin(0, 0)
    patch = torch.from_numpy(ds.ReadAsArray(left, top, 32, 32).astype(np.float32) / 10000)[None]
    vhr = open_vhr(vhr_fixture)
    rgb, coverage = read_patch(vhr, grid.patch_bounds(0, 0), ds.GetProjection())
    assert coverage >= 0.9
    g = build_graph(rgb, sam.MaskGenerator(sam.load_sam(assets.fetch_member(assets.MOBILE_SAM)), **FAST_AMG)(rgb))
    with torch.no_grad():
        p_s2 = model.sentinel2(patch)[0].numpy()
        p_vhr = model.modules["vhr"](torch.from_numpy(g.x), torch.from_numpy(g.edge_index),
                                     torch.from_numpy(g.edge_weight), torch.zeros(g.num_nodes, dtype=torch.long))[0]
    expected = np.rint((0.6 * p_s2 + 0.4 * p_vhr.numpy()) * 100)
    written = gdal.Open(str(tmp_path / "p.tif")).ReadAsArray()[:17, 0, 0]  # band 18: the winning class
    assert np.abs(written - expected).max() <= 1
    assert '"fused_cells": 1' in result["results"]["SUMMARY"]


def test_sentinel2_only_model_ignores_vhr(qgis_env, s2_stack, vhr_fixture, tmp_path):
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {
        "SENTINEL2": s2_stack, "EXTENT": _extent(FUSED_EXTENT), "VHR": vhr_fixture,
        "OUTPUT": tmp_path / "lcz.tif", "SOURCE": tmp_path / "source.tif"}, json_output=False)
    assert rc == 0, text
    assert "has no high-resolution stream" in text and "No fused result is produced" in text
    assert (gdal.Open(str(tmp_path / "source.tif")).ReadAsArray() == lcz_raster.SOURCE_S2).all()


def _bad_vhr_cases(s2_stack, vhr_fixture, fused_model, tmp_path):
    one_band = raster_copy(vhr_fixture, tmp_path / "one_band.tif", bandList=[1])
    coarse = raster_copy(s2_stack, tmp_path / "coarse_30m.tif", bandList=[3, 2, 1], xRes=30, yRes=30)
    elsewhere = tmp_path / "elsewhere.tif"
    gdal.Translate(str(elsewhere), str(ZURICH), outputSRS="EPSG:32618", outputBounds=[450000, 4163000, 450437.5, 4162700])
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(assets.fetch_member(assets.MOBILE_SAM).read_bytes()[:2_000_000])
    foreign = tmp_path / "not_sam.pt"
    torch.save(load_model(MODEL_CARD).sentinel2.state_dict(), foreign)
    classify = {"SENTINEL2": s2_stack, "EXTENT": _extent(FUSED_EXTENT), "MODEL_FILE": fused_model}
    return {
        "no overlap": ("df4lcz:classifylcz", {**classify, "VHR": elsewhere}, "does not overlap the extent"),
        "one band": ("df4lcz:classifylcz", {**classify, "VHR": one_band}, "has 1 band(s); the object stream needs RGB"),
        "30 m": ("df4lcz:classifylcz", {**classify, "VHR": coarse}, "pixels are 30.0 m"),
        "wrong architecture": ("df4lcz:classifylcz", {**classify, "VHR": vhr_fixture, "SAM_CHECKPOINT": foreign},
                               "not a Segment Anything model"),
        "truncated": ("df4lcz:buildobjectgraphs", {"VHR": ZURICH, "CHECKPOINT": truncated},
                      "is corrupt or truncated"),
        "objects elsewhere": ("df4lcz:buildobjectgraphs", {"VHR": ZURICH, "EXTENT": _extent(FUSED_EXTENT)},
                              "does not overlap the extent"),
    }


@pytest.mark.parametrize("case", ["no overlap", "one band", "30 m", "wrong architecture", "truncated",
                                  "objects elsewhere"])
def test_bad_vhr_input(qgis_env, s2_stack, vhr_fixture, fused_model, tmp_path, case):
    algorithm, parameters, message = _bad_vhr_cases(s2_stack, vhr_fixture, fused_model, tmp_path)[case]
    out = tmp_path / "out"
    out.mkdir()
    outputs = ({"OUTPUT": out / "lcz.tif", "SOURCE": out / "source.tif"} if algorithm.endswith("classifylcz")
               else {"OUTPUT": out / "objects.gpkg", "GRAPHS": out / "graphs.npz"})
    rc, _, text = run_qgis_process(qgis_env, algorithm, {**parameters, **outputs}, json_output=False)
    assert rc != 0
    assert message in text.replace("\n", " "), text
    assert list(out.iterdir()) == []


def test_zero_masks_give_empty_outputs(qgis_env, tmp_path):
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:buildobjectgraphs", {
        "VHR": ZURICH, "POINTS_PER_SIDE": 4, "CROP_N_LAYERS": 0, "PRED_IOU_THRESH": 1.01,
        "OUTPUT": tmp_path / "objects.gpkg", "GRAPHS": tmp_path / "graphs.npz"}, json_output=False)
    assert rc == 0, text
    datasource = ogr.Open(str(tmp_path / "objects.gpkg"))
    assert datasource.GetLayer(0).GetFeatureCount() == 0
    graphs = np.load(tmp_path / "graphs.npz")
    assert graphs["x"].shape == (0, 5) and graphs["patch_bounds"].shape == (2, 4)
