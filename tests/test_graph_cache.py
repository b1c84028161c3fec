"""SAM work is never repeated: the graph cache on real VHR imagery (the Zürich orthophoto on the Virginia scene,
the FIXTURE of conftest.py), through the engine and through real QGIS."""

import json

import numpy as np
import pytest

from df4lcz_plugin.mapping.classify import classify
from df4lcz_plugin.mapping.settings import ClassifySettings
from df4lcz_plugin.runtime.feedback import Canceled, Feedback
from df4lcz_plugin.vhr.graph import ObjectGraph
from df4lcz_plugin.vhr.graph_cache import GraphCache
from df4lcz_plugin.models.registry import load_model

from conftest import FUSED_EXTENT, run_qgis_process

#: 3 × 4 cells over the fixture's imagery (437.5 × 300 m): two footprints are covered ≥ 90 %.
WIDE_EXTENT = (440500.0, 4172580.0, 440900.0, 4172900.0)


def _run(s2_stack, model, vhr, out, feedback=None):
    return classify(s2_stack, out / "lcz.tif", model, bounds=WIDE_EXTENT, vhr_path=vhr,
                    probabilities_path=out / "p.tif", source_path=out / "s.tif", feedback=feedback)


def test_second_fused_run_runs_no_sam_and_gives_identical_outputs(s2_stack, vhr_fixture, fused_model, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setenv("DF4LCZ_GRAPH_CACHE", str(tmp_path / "cache"))
    model = load_model(fused_model)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _run(s2_stack, model, vhr_fixture, tmp_path / "a")
    second = _run(s2_stack, model, vhr_fixture, tmp_path / "b")
    assert first["sam_runs"] >= 2 and first["graph_cache_hits"] == 0 and first["fused_cells"] >= 2
    assert second["sam_runs"] == 0 and second["graph_cache_hits"] == first["sam_runs"]
    for name in ("lcz.tif", "p.tif", "s.tif"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_a_canceled_fused_run_continues_where_it_stopped(s2_stack, vhr_fixture, fused_model, tmp_path, monkeypatch):
    monkeypatch.setenv("DF4LCZ_GRAPH_CACHE", str(tmp_path / "cache"))
    model = load_model(fused_model)

    class CancelAfterOneSAMRun(Feedback):
        stop = False

        def info(self, text):
            self.stop |= text.startswith("SAM: 1 run(s)")

        def canceled(self):
            return self.stop

    (tmp_path / "a").mkdir()
    with pytest.raises(Canceled):
        _run(s2_stack, model, vhr_fixture, tmp_path / "a", CancelAfterOneSAMRun())
    assert list((tmp_path / "a").iterdir()) == []  # nothing half-written
    (tmp_path / "b").mkdir()
    resumed = _run(s2_stack, model, vhr_fixture, tmp_path / "b")
    assert resumed["graph_cache_hits"] == 1 and resumed["sam_runs"] >= 1


def test_fused_run_through_qgis_reuses_the_cache(qgis_env, s2_stack, vhr_fixture, fused_model, tmp_path):
    env = dict(qgis_env, DF4LCZ_GRAPH_CACHE=str(tmp_path / "cache"))
    extent = f"{FUSED_EXTENT[0]},{FUSED_EXTENT[2]},{FUSED_EXTENT[1]},{FUSED_EXTENT[3]} [EPSG:32618]"
    summaries, texts = [], []
    for name in ("a", "b"):
        rc, result, text = run_qgis_process(env, "df4lcz:classifylcz", {
            "SENTINEL2": s2_stack, "EXTENT": extent, "VHR": vhr_fixture, "MODEL_FILE": fused_model,
            "OUTPUT": tmp_path / f"{name}.tif"})
        assert rc == 0, text
        summaries.append(json.loads(result["results"]["SUMMARY"]))
        texts.append(text)
    assert summaries[0]["sam_runs"] == 1 and summaries[1]["sam_runs"] == 0
    assert "Fused run: 16 cells, 0 object graphs already in the cache, up to 16 SAM runs" in texts[0]
    assert "needs about 10× fewer SAM runs than 100 m" in texts[0]
    assert "Fused run: 16 cells, 1 object graphs already in the cache" in texts[1]
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()


def _graph(n):
    rng = np.random.default_rng(n)
    return ObjectGraph(rng.random((n, 5), dtype=np.float32), np.zeros((2, 0), np.int64), np.zeros(0, np.float32))


def test_cache_keys_and_cap(tmp_path):
    cache = GraphCache(tmp_path, cap_bytes=1)
    base = ("/data/ortho.tif|100|1", (0.0, 0.0, 320.0, 320.0), "WKT", "sha", {"points_per_side": 12},
            {"rule": "radius", "radius": 0.25})
    key = GraphCache.key(*base)
    changes = ("/data/ortho.tif|100|2", (0.0, 0.0, 320.0, 320.01), "WKT2", "sha2", {"points_per_side": 8},
               {"rule": "radius", "radius": 0.3})
    for index, changed in enumerate(changes):  # imagery, footprint, CRS, checkpoint, AMG settings, graph rule
        variant = list(base)
        variant[index] = changed
        assert GraphCache.key(*variant) != key
    cache.put(key, _graph(4))
    assert key not in cache  # over its cap of 1 byte: trimmed at once
    roomy = GraphCache(tmp_path / "roomy")
    roomy.put(key, _graph(4))
    assert np.array_equal(roomy.get(key).x, _graph(4).x)
    roomy._path(key).write_bytes(b"half a file")
    assert roomy.get(key) is None  # a broken entry is a miss, never an error


def test_buildobjectgraphs_fills_the_cache_for_a_classification(qgis_env, s2_stack, vhr_fixture, fused_model,
                                                                  tmp_path):
    env = dict(qgis_env, DF4LCZ_GRAPH_CACHE=str(tmp_path / "cache"))
    extent = f"{WIDE_EXTENT[0]},{WIDE_EXTENT[2]},{WIDE_EXTENT[1]},{WIDE_EXTENT[3]} [EPSG:32618]"
    # The fixture model's SAM settings (conftest FAST_AMG) and the default graph radius.
    rc, result, text = run_qgis_process(env, "df4lcz:buildobjectgraphs", {
        "VHR": vhr_fixture, "CLASSIFICATION_GRID": s2_stack, "EXTENT": extent, "RESOLUTION": 100,
        "POINTS_PER_SIDE": 4, "CROP_N_LAYERS": 0, "SEGMENTATION": "footprint"})
    assert rc == 0, text
    assert result["results"]["SAM_RUNS"] == 2 and result["results"]["GRAPH_CACHE_HITS"] == 0
    rc, result, text = run_qgis_process(env, "df4lcz:classifylcz", {
        "SENTINEL2": s2_stack, "EXTENT": extent, "VHR": vhr_fixture, "MODEL_FILE": fused_model,
        "OUTPUT": tmp_path / "lcz.tif"})
    assert rc == 0, text
    summary = json.loads(result["results"]["SUMMARY"])
    assert summary["sam_runs"] == 0 and summary["graph_cache_hits"] == 2 and summary["fused_cells"] == 2


@pytest.fixture
def tiles_model(fused_model, tmp_path):
    """The fixture model with shared segmentation in its card's graph rule (same weights)."""
    import shutil

    card = json.loads(fused_model.read_text())
    card["streams"]["vhr"]["graph_rule"] = {**card["streams"]["vhr"]["graph_rule"], "segmentation": "tiles"}
    path = tmp_path / "df4lcz_fixture_tiles.json"
    path.write_text(json.dumps(card))
    shutil.copy(fused_model.with_suffix(".safetensors"), path.with_suffix(".safetensors"))
    return path


def test_shared_segmentation_tiles_serve_the_object_graphs_and_any_classification(
        qgis_env, s2_stack, vhr_fixture, tiles_model, tmp_path, monkeypatch):
    """buildobjectgraphs (SEGMENTATION tiles, the default) segments the 4 tiles under the imagery once; a
    classification at another RESOLUTION, whose footprints are all new, then composes them without SAM."""
    env = dict(qgis_env, DF4LCZ_GRAPH_CACHE=str(tmp_path / "cache"))
    extent = f"{WIDE_EXTENT[0]},{WIDE_EXTENT[2]},{WIDE_EXTENT[1]},{WIDE_EXTENT[3]} [EPSG:32618]"
    rc, result, text = run_qgis_process(env, "df4lcz:buildobjectgraphs", {
        "VHR": vhr_fixture, "CLASSIFICATION_GRID": s2_stack, "EXTENT": extent, "RESOLUTION": 100,
        "POINTS_PER_SIDE": 4, "CROP_N_LAYERS": 0})
    assert rc == 0, text
    assert result["results"]["SAM_RUNS"] == 4
    assert "shared segmentation: up to" in text and "SAM tiles of 320 m to segment" in text

    class Log(Feedback):
        lines = []

        def info(self, line):
            self.lines.append(line)

    log = Log()
    monkeypatch.setenv("DF4LCZ_GRAPH_CACHE", str(tmp_path / "cache"))
    summary = classify(s2_stack, tmp_path / "lcz.tif", load_model(tiles_model), ClassifySettings(resolution=50),
                       bounds=WIDE_EXTENT, vhr_path=vhr_fixture, feedback=log)
    assert summary["sam_runs"] == 0 and summary["graph_cache_hits"] == 0 and summary["fused_cells"] >= 2
    assert any("shared segmentation: up to" in line for line in log.lines)
