"""The Sentinel-2 stream's back-ends on the real Virginia scene: OpenVINO ≡ PyTorch, the converted model built
once beside the model, the choice through real QGIS, and memory bounded by pixels at coarse RESOLUTION."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from osgeo import gdal

from df4lcz_plugin.mapping.classify import TILE_PX, classify, predict_tile, tile_cells
from df4lcz_plugin.mapping.settings import ClassifySettings
from df4lcz_plugin.runtime.grid import make_grid
from df4lcz_plugin.models import backends
from df4lcz_plugin.models.registry import read_card
from df4lcz_plugin.sentinel2.checks import open_sentinel2

from conftest import FARMLAND_EXTENT, MODEL_CARD, ROOT, run_qgis_process


def _probabilities(stack, runner, resolution=200):
    ds = open_sentinel2(stack)
    grid = make_grid(ds.GetGeoTransform(), (ds.RasterXSize, ds.RasterYSize), None, resolution)
    probs, _ = predict_tile(ds, grid, (0, 0, grid.rows, grid.cols), runner, 10000.0, 128, [None] * 10, lambda n: None)
    return probs


def test_openvino_matches_pytorch_on_the_demo_scene(s2_stack, model):
    """Every cell of the demo scene at 200 m (8,900 patches with data): fp32 OpenVINO within 1e-4 of PyTorch."""
    xml = backends.converted_path(model.card)
    if not xml.exists():
        backends.convert(model.sentinel2, xml)
    ov = _probabilities(s2_stack, backends.OpenVINORunner(xml))
    pt = _probabilities(s2_stack, backends.TorchRunner(model.sentinel2, "cpu"))
    data = ~np.isnan(pt[0])
    assert data.sum() > 8000 and np.array_equal(data, ~np.isnan(ov[0]))
    assert np.abs(ov[:, data] - pt[:, data]).max() <= 1e-4
    assert np.array_equal(ov[:, data].argmax(0), pt[:, data].argmax(0))
    bf16 = _probabilities(s2_stack, backends.OpenVINORunner(xml, "bf16"))
    assert (bf16[:, data].argmax(0) == pt[:, data].argmax(0)).mean() > 0.95  # the opt-in, stated in the help


def test_converted_model_is_built_once_beside_the_model(s2_stack, tmp_path):
    for suffix in (".json", ".safetensors"):
        shutil.copy(MODEL_CARD.with_suffix(suffix), tmp_path / f"mine{suffix}")
    card = read_card(tmp_path / "mine.json")
    summary = classify(s2_stack, tmp_path / "a.tif", card, ClassifySettings(backend="openvino"), bounds=FARMLAND_EXTENT)
    xml = tmp_path / f"mine.openvino-{card.data['weights_sha256'][:16]}.xml"
    assert summary["backend"] == "openvino f32 on cpu" and xml.exists() and xml.with_suffix(".bin").exists()
    built = xml.stat().st_mtime_ns
    classify(s2_stack, tmp_path / "b.tif", card, ClassifySettings(backend="openvino"), bounds=FARMLAND_EXTENT)
    assert xml.stat().st_mtime_ns == built  # reused, not rebuilt
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_read_only_model_folder_converts_into_the_cache(s2_stack, tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    for suffix in (".json", ".safetensors"):
        shutil.copy(MODEL_CARD.with_suffix(suffix), folder / f"mine{suffix}")
    folder.chmod(0o555)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    try:
        card = read_card(folder / "mine.json")
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user who can write into a read-only folder (root)")
        classify(s2_stack, tmp_path / "a.tif", card, ClassifySettings(backend="openvino"), bounds=FARMLAND_EXTENT)
        assert list((tmp_path / "cache/df4lcz/openvino").glob("mine.openvino-*.xml"))
    finally:
        folder.chmod(0o755)


def test_backend_choice_through_qgis(qgis_env, s2_stack, tmp_path):
    maps = {}
    for backend in ("openvino", "pytorch"):
        rc, result, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {
            "SENTINEL2": s2_stack, "EXTENT": f"{FARMLAND_EXTENT[0]},{FARMLAND_EXTENT[2]},{FARMLAND_EXTENT[1]},"
                                              f"{FARMLAND_EXTENT[3]} [EPSG:32618]",
            "BACKEND": backend, "OUTPUT": tmp_path / f"{backend}.tif"})
        assert rc == 0, text
        assert json.loads(result["results"]["SUMMARY"])["backend"].startswith(backend)
        maps[backend] = gdal.Open(str(tmp_path / f"{backend}.tif")).ReadAsArray()
    assert np.array_equal(maps["openvino"], maps["pytorch"])
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {
        "SENTINEL2": s2_stack, "EXTENT": f"{FARMLAND_EXTENT[0]},{FARMLAND_EXTENT[2]},{FARMLAND_EXTENT[1]},"
                                          f"{FARMLAND_EXTENT[3]} [EPSG:32618]", "TTA": True, "OUTPUT": tmp_path / "tta.tif"})
    assert rc == 0, text
    assert json.loads(result["results"]["SUMMARY"])["backend"] == "openvino f32 on cpu, test-time augmentation ×8"
    tta = gdal.Open(str(tmp_path / "tta.tif")).ReadAsArray()
    assert np.array_equal(tta > 0, maps["openvino"] > 0) and (tta == maps["openvino"]).mean() > 0.7
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {
        "SENTINEL2": s2_stack, "BACKEND": "pytorch", "PRECISION": "bf16", "OUTPUT": tmp_path / "x.tif"},
        json_output=False)
    assert rc != 0 and "PRECISION=bf16 is offered with BACKEND=openvino only" in text


def test_an_index_for_a_list_parameter_is_refused_with_the_names(qgis_env, s2_stack, tmp_path):
    """The lists are stored as text; QGIS 3.22 refuses an index for them ("Incorrect parameter value"), and the
    plugin says which names to give instead."""
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {
        "SENTINEL2": s2_stack, "BACKEND": 2, "OUTPUT": tmp_path / "x.tif"}, json_output=False)
    assert rc != 0 and "BACKEND=2 is not one of its options; give the option's name: auto, openvino, pytorch." in text
    assert list(tmp_path.iterdir()) == []


def test_tiles_are_bounded_by_pixels():
    for cell_px in (1, 10, 32, 100, 200, 1000, 5000):
        n = tile_cells(cell_px)
        assert 1 <= n <= 64 and ((n - 1) * cell_px + 32 <= TILE_PX or n == 1)


def test_memory_is_bounded_at_resolution_2000(s2_stack, tmp_path):
    """RESOLUTION=2000 over a 96 × 96 km VRT mosaic of the real scene (5 × 5 copies): peak RSS of the run."""
    sys.path.insert(0, str(ROOT))
    from bench.bench_sentinel2 import build_mosaic

    build_mosaic(s2_stack, tmp_path / "mosaic.vrt", 5, 9600)
    # VmHWM: the peak of this process's own memory (ru_maxrss would keep the forked parent's, a big pytest).
    script = ("import re, sys; sys.path.insert(0, sys.argv[1]);"
              "from df4lcz_plugin.mapping.classify import classify;"
              "from df4lcz_plugin.models.registry import read_card;"
              "from df4lcz_plugin.mapping.settings import ClassifySettings;"
              "s = classify(sys.argv[2], sys.argv[3], read_card(sys.argv[4]), ClassifySettings(resolution=2000));"
              "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1);"
              "print(s['classified_cells'], int(hwm) / 1024)")
    out = subprocess.run([sys.executable, "-c", script, str(ROOT), str(tmp_path / "mosaic.vrt"),
                          str(tmp_path / "lcz.tif"), str(MODEL_CARD)], check=True, capture_output=True, text=True)
    cells, peak_mb = out.stdout.split()[-2:]
    assert int(cells) > 1500  # 48 × 48 cells, most over the real scene
    assert float(peak_mb) < 1024, f"peak RSS {peak_mb} MB"


@pytest.mark.timeout(300)
def test_test_time_augmentation_does_not_depend_on_the_patch_orientation(s2_stack):
    """Real patches of the demo scene through the shipped model on OpenVINO: the TTA probabilities of a patch and
    of the same patch turned or mirrored are the same (the 8 views form a group), and differ from the plain ones."""
    runner, engine = backends.sentinel2_runner(read_card(MODEL_CARD), "openvino", "cpu", tta=True)
    assert engine.endswith("test-time augmentation ×8")
    window = gdal.Open(str(s2_stack)).ReadAsArray(800, 800, 320, 320).astype(np.float32) / 10000
    patches = np.ascontiguousarray(window.reshape(10, 10, 32, 10, 32).transpose(1, 3, 0, 2, 4).reshape(100, 10, 32, 32))
    tta = runner(patches)
    assert tta.shape == (100, 17) and np.allclose(tta.sum(axis=1), 1, atol=1e-4)
    for turned in (np.rot90(patches, 1, axes=(2, 3)), patches[..., ::-1], np.rot90(patches[..., ::-1, :], 3, (2, 3))):
        np.testing.assert_allclose(runner(np.ascontiguousarray(turned)), tta, atol=2e-5)
    plain = runner.runner(patches)
    assert np.abs(plain - tta).max() > 0.01  # the model alone does depend on the orientation


@pytest.mark.timeout(300)
def test_pytorch_runner_threads_are_its_own(model):
    """BACKEND=pytorch on the CPU runs the Sentinel-2 stream on TORCH_CPU_THREADS (1) during its own calls only; the
    process's PyTorch threads, which SAM uses in a fused run, are as they were before and after (issue 28)."""
    import torch

    runner, _ = backends.sentinel2_runner(model, backend="pytorch", device="cpu")
    seen = []
    hook = runner.module.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        runner(np.zeros((2, 10, 32, 32), np.float32))
        assert seen == [backends.TORCH_CPU_THREADS] and torch.get_num_threads() == 2
    finally:
        hook.remove()
        torch.set_num_threads(before)
