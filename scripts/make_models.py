"""Write the bundled STAC models with PyQGIS's model API, so that they can be regenerated rather than hand-edited:

- ``resources/models/lcz_for_extent.model3``: sentinel2fetch → classifylcz over one extent and date range;
- ``resources/models/lcz_four_seasons.model3``: a fetch per season of a YEAR (DJF, MAM, JJA, SON), then one
  classifydates of the four stacks (their probabilities averaged) into one map and its agreement raster.
- ``resources/models/lcz_from_training_areas.model3``: the LCZ Generator workflow, sentinel2fetch over the extent
  → trainmodel with bootstraps → classifylcz with the filtered map → lczfactsheet.

Usage: ``QT_QPA_PLATFORM=offscreen python scripts/make_models.py`` (QGIS 3.22 or later; the plugin's provider is
loaded from this checkout so that the models' output parameters come from the algorithms themselves).
"""

import importlib.util
import os
import sys
from pathlib import Path

os.environ["QT_HASH_SEED"] = "0"  # before Qt starts: the same XML attribute order on every run (diffable files)
from qgis.core import (QgsApplication, QgsProcessingModelAlgorithm, QgsProcessingModelChildAlgorithm,  # noqa: E402
                       QgsProcessingModelChildDependency, QgsProcessingModelChildParameterSource,
                       QgsProcessingModelOutput, QgsProcessingModelParameter, QgsProcessingParameterBoolean,
                       QgsProcessingParameterDefinition,
                       QgsProcessingParameterExtent, QgsProcessingParameterFeatureSource,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString, QgsProcessingProvider)
from qgis.PyQt.QtCore import QPointF  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "resources" / "models"
GROUP = "Local climate zones"
Source = QgsProcessingModelChildParameterSource
#: Season code → (first month's year offset from YEAR, first month, year offset and month after its last month).
SEASONS = {"DJF": (-1, 12, 0, 3), "MAM": (0, 3, 0, 6), "JJA": (0, 6, 0, 9), "SON": (0, 9, 0, 12)}
SEASON_NAMES = {"DJF": "December–February", "MAM": "March–May", "JJA": "June–August", "SON": "September–November"}
NO_SCENE = ("QGIS runs a model's steps in order and stops at the first that fails: a season without a usable "
            "scene stops the run with the fetch's message (“No Sentinel-2 scene … covers the extent from … to …”, "
            "or no date clear enough). The four fetches run first, in season order, so that the run stops before "
            "any classification; widen the dates or the cloud limits with 'Map LCZ for an extent' for that season.")


def load_provider() -> QgsProcessingProvider:
    """Register this checkout's df4lcz provider (the repository root is the plugin package ``df4lcz``); the caller
    keeps the returned provider alive (the registry does not own a Python provider)."""
    spec = importlib.util.spec_from_file_location("df4lcz", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["df4lcz"] = package
    spec.loader.exec_module(package)
    from df4lcz.algorithms.provider import DF4LCZProvider

    provider = DF4LCZProvider()
    if not QgsApplication.processingRegistry().addProvider(provider):
        raise SystemExit("Could not register the df4lcz provider.")
    return provider


def add_input(model: QgsProcessingModelAlgorithm, definition: QgsProcessingParameterDefinition, row: int,
              advanced: bool = False) -> None:
    """Add a model input, placed in the left column of the designer."""
    from df4lcz.algorithms.compat import FLAG_ADVANCED  # the plugin's names for 3.22 and QGIS 4 (load_provider)

    if advanced:
        definition.setFlags(definition.flags() | FLAG_ADVANCED)
    component = QgsProcessingModelParameter(definition.name())
    component.setPosition(QPointF(120, 60 + 70 * row))
    model.addModelParameter(definition, component)


def add_shared_inputs(model: QgsProcessingModelAlgorithm, first_row: int) -> None:
    """STAC_API, COLLECTION (advanced), MODEL and RESOLUTION, as both models ask for them; MODEL is the id of an
    installed model (a trained one's file name), RESOLUTION mirrors lcz_from_composite's."""
    add_input(model, QgsProcessingParameterString(
        "STAC_API", "STAC API (earth-search, planetary-computer, or a URL)", "earth-search"), first_row)
    add_input(model, QgsProcessingParameterString("COLLECTION", "Collection (empty: the API's L2A one)", "",
                                                  optional=True), first_row + 1, advanced=True)
    add_input(model, QgsProcessingParameterString("MODEL", "Model (id of an installed model)", "sen2lcznet_so2sat"),
              first_row + 2)
    add_input(model, QgsProcessingParameterNumber("RESOLUTION", "Output resolution (m)",
                                                  number_type("NUMBER_DOUBLE"), 100.0, minValue=10.0),
              first_row + 3)


def add_child(model: QgsProcessingModelAlgorithm, child_id: str, algorithm: str, description: str, x: float,
              y: float, sources: dict[str, Source | list[Source]], outputs: dict[str, tuple[str, str]],
              after: tuple[str, ...] = ()) -> None:
    """Add step ``child_id`` running ``algorithm`` with ``sources`` (parameter → source, or a list of them for a
    multiple-layer parameter); ``outputs``: model output name → (the algorithm's output, description); ``after``:
    steps that must run first."""
    child = QgsProcessingModelChildAlgorithm(algorithm)
    child.setChildId(child_id)
    child.setDescription(description)
    child.setPosition(QPointF(x, y))
    for name, source in sources.items():
        child.addParameterSources(name, source if isinstance(source, list) else [source])
    model_outputs = {}
    for name, (child_output, output_description) in outputs.items():
        output = QgsProcessingModelOutput(name, output_description)
        output.setChildId(child_id)
        output.setChildOutputName(child_output)
        output.setPosition(QPointF(x + 220, y + 50))
        model_outputs[name] = output
    child.setModelOutputs(model_outputs)
    child.setDependencies([QgsProcessingModelChildDependency(step) for step in after])
    model.addChildAlgorithm(child)


def add_fetch(model: QgsProcessingModelAlgorithm, suffix: str, start: Source, end: Source, max_dates: Source,
              y: float, outputs: dict[str, str], after: tuple[str, ...] = ()) -> None:
    """The fetch step ``fetch<suffix>`` over the model's EXTENT; ``outputs``: "stack" → model output name, if any."""
    label = f" ({suffix.strip('_').upper()})" if suffix else ""
    add_child(model, f"fetch{suffix}", "df4lcz:sentinel2fetch", f"Fetch Sentinel-2{label}", 420, y,
              {"EXTENT": Source.fromModelParameter("EXTENT"), "START_DATE": start, "END_DATE": end,
               "MAX_DATES": max_dates, "STAC_API": Source.fromModelParameter("STAC_API"),
               "COLLECTION": Source.fromModelParameter("COLLECTION"), "CLOUD_MASK": Source.fromStaticValue("scl")},
              {outputs["stack"]: ("OUTPUT", f"Sentinel-2 stack{label}")} if "stack" in outputs else {}, after)


def classify_sources(stacks: Source | list[Source]) -> dict[str, Source | list[Source]]:
    """A classify step's SENTINEL2 (``stacks``), EXTENT, MODEL and RESOLUTION, the last three the model's."""
    return {"SENTINEL2": stacks, "EXTENT": Source.fromModelParameter("EXTENT"),
            "MODEL": Source.fromModelParameter("MODEL"), "RESOLUTION": Source.fromModelParameter("RESOLUTION")}


def fetch_and_classify(model: QgsProcessingModelAlgorithm, start: Source, end: Source, max_dates: Source,
                       y: float, outputs: dict[str, str]) -> None:
    """The fetch step ``fetch`` and the classify step ``classify`` reading its stack over the same EXTENT;
    ``outputs``: "map" and/or "stack" → model output name."""
    add_fetch(model, "", start, end, max_dates, y, outputs)
    add_child(model, "classify", "df4lcz:classifylcz", "Classify local climate zones", 720, y + 80,
              classify_sources(Source.fromChildOutput("fetch", "OUTPUT")), {outputs["map"]: ("OUTPUT", "LCZ map")})


def new_model(title: str, help_text: str) -> QgsProcessingModelAlgorithm:
    """An empty model in the plugin's group, with its help text and an EXTENT input (row 0)."""
    model = QgsProcessingModelAlgorithm(title, GROUP)
    model.setHelpContent({"ALG_DESC": help_text})
    add_input(model, QgsProcessingParameterExtent("EXTENT", "Extent to map (any CRS)"), 0)
    return model


def lcz_for_extent() -> QgsProcessingModelAlgorithm:
    """Map LCZ for an extent: fetch the extent's Sentinel-2 stack (a composite of MAX_DATES dates), classify it."""
    model = new_model("Map LCZ for an extent", (
        "Fetches the Sentinel-2 L2A stack of the extent from a STAC API (Earth Search by default) for START_DATE to "
        "END_DATE, a cloud-free composite of the clearest MAX_DATES dates ('Fetch Sentinel-2 for an extent'), "
        "then classifies local climate zones over the same extent. Outputs: the styled LCZ GeoTIFF and the "
        "Sentinel-2 stack."))
    add_input(model, QgsProcessingParameterString("START_DATE", "First acquisition date (YYYY-MM-DD)",
                                                  "2024-06-01"), 1)
    add_input(model, QgsProcessingParameterString("END_DATE", "Last acquisition date (YYYY-MM-DD)", "2024-08-31"), 2)
    add_input(model, QgsProcessingParameterNumber("MAX_DATES", "Dates to combine (1: one date, no composite)",
                                                  number_type("NUMBER_INTEGER"), 3, minValue=1, maxValue=50), 3)
    add_shared_inputs(model, 4)
    fetch_and_classify(model, Source.fromModelParameter("START_DATE"), Source.fromModelParameter("END_DATE"),
                       Source.fromModelParameter("MAX_DATES"), 60, {"map": "LCZ_MAP", "stack": "STACK"})
    return model


def number_type(name: str):
    """QgsProcessingParameterNumber's type ``name`` (NUMBER_INTEGER, NUMBER_DOUBLE) as the plugin's compat names it
    for QGIS 3.22 and QGIS 4 (load_provider first)."""
    from df4lcz.algorithms import compat

    return getattr(compat, name)


def season_dates(code: str) -> tuple[Source, Source]:
    """START_DATE and END_DATE of season ``code`` as expressions of the model input YEAR (``@YEAR``)."""
    start_year, start_month, next_year, next_month = SEASONS[code]
    start = f"format_date(make_date(@YEAR + {start_year}, {start_month}, 1), 'yyyy-MM-dd')"
    end = f"format_date(make_date(@YEAR + {next_year}, {next_month}, 1) - to_interval('1 day'), 'yyyy-MM-dd')"
    return Source.fromExpression(start), Source.fromExpression(end)


def lcz_four_seasons() -> QgsProcessingModelAlgorithm:
    """Map LCZ from the four seasons of YEAR: four fetches (in season order), then one classifydates of the four
    stacks (the seasons' probabilities averaged) into one map and its agreement raster."""
    seasons = ", ".join(f"{code} {SEASON_NAMES[code]}" for code in SEASONS)
    model = new_model("Map LCZ for an extent, four seasons", (
        f"Maps local climate zones over the extent from the four seasons of YEAR ({seasons}; DJF starts in December "
        "of YEAR − 1): each season's Sentinel-2 L2A composite (the clearest 3 dates) is fetched from a STAC API, "
        "then the four are classified together ('Classify LCZ from several dates'): each cell's class "
        "probabilities are averaged over the seasons that have data there. Outputs: the styled LCZ GeoTIFF "
        "(LCZ_MAP) and, optionally, AGREEMENT: per cell, the percentage of those seasons whose own class is the "
        f"map's (255 = no data). {NO_SCENE}"))
    add_input(model, QgsProcessingParameterNumber("YEAR", "Year (DJF starts in December of the year before)",
                                                  number_type("NUMBER_INTEGER"), 2024, minValue=2015,
                                                  maxValue=2100), 1)
    add_shared_inputs(model, 2)
    fetches = tuple(f"fetch_{code.lower()}" for code in SEASONS)
    for row, code in enumerate(SEASONS):
        start, end = season_dates(code)
        add_fetch(model, f"_{code.lower()}", start, end, Source.fromStaticValue(3), 60 + 200 * row, {},
                  after=fetches[:row][-1:])
    add_child(model, "classify", "df4lcz:classifydates", "Classify LCZ from the four seasons", 720, 360,
              classify_sources([Source.fromChildOutput(fetch, "OUTPUT") for fetch in fetches]),
              {"LCZ_MAP": ("OUTPUT", "LCZ map (four seasons)"),
               "AGREEMENT": ("AGREEMENT", "Agreement of the seasons with the map (%)")}, fetches[-1:])
    return model


def add_workflow_inputs(model: QgsProcessingModelAlgorithm) -> None:
    """The LCZ Generator workflow's inputs besides EXTENT (row 0): the training areas, the dates, the bootstraps and
    the ensemble, VHR and the global map (rows 1–13)."""
    from df4lcz.algorithms.compat import SOURCE_VECTOR_POLYGON

    add_input(model, QgsProcessingParameterFeatureSource(
        "TRAINING_AREAS", "LCZ training areas (polygons, or a WUDAPT KML/KMZ), inside the extent",
        [SOURCE_VECTOR_POLYGON]), 1)
    add_input(model, QgsProcessingParameterString("CLASS_FIELD", "Class field (empty: lcz, class… or the KML "
                                                  "folders)", "", optional=True), 2, advanced=True)
    add_input(model, QgsProcessingParameterString("START_DATE", "First acquisition date (YYYY-MM-DD)",
                                                  "2024-06-01"), 3)
    add_input(model, QgsProcessingParameterString("END_DATE", "Last acquisition date (YYYY-MM-DD)", "2024-08-31"), 4)
    add_input(model, QgsProcessingParameterNumber("MAX_DATES", "Dates to combine (1: one date, no composite)",
                                                  number_type("NUMBER_INTEGER"), 3, minValue=1, maxValue=50), 5)
    add_input(model, QgsProcessingParameterString(
        "STAC_API", "STAC API (earth-search, planetary-computer, or a URL)", "earth-search"), 6)
    add_input(model, QgsProcessingParameterString("COLLECTION", "Collection (empty: the API's L2A one)", "",
                                                  optional=True), 7, advanced=True)
    add_input(model, QgsProcessingParameterNumber("BOOTSTRAPS", "Bootstraps (70/30 splits by polygon; LCZ "
                                                  "Generator: 25)", number_type("NUMBER_INTEGER"), 25, minValue=1,
                                                  maxValue=100), 8)
    add_input(model, QgsProcessingParameterBoolean("ENSEMBLE", "Ensemble: map with the bootstrap models and the "
                                                   "final model, their probabilities averaged (needs BOOTSTRAPS ≥ 2)",
                                                   False), 9)
    add_input(model, QgsProcessingParameterNumber("EPOCHS", "Epochs", number_type("NUMBER_INTEGER"), 30,
                                                  minValue=1), 10, advanced=True)
    add_input(model, QgsProcessingParameterRasterLayer("VHR", "High-resolution (VHR) imagery", optional=True), 11)
    add_input(model, QgsProcessingParameterNumber("RESOLUTION", "Output resolution (m)",
                                                  number_type("NUMBER_DOUBLE"), 100.0, minValue=10.0), 12)
    add_input(model, QgsProcessingParameterRasterLayer(
        "GLOBAL_MAP", "Global LCZ map, local copy (the factsheet's agreement)", optional=True), 13)


def lcz_from_training_areas() -> QgsProcessingModelAlgorithm:
    """The LCZ Generator workflow: fetch the extent's Sentinel-2 stack, train with bootstraps on the training areas,
    classify the extent (raw and filtered map), write the factsheet."""
    model = new_model("LCZ map from training areas (LCZ Generator workflow)", (
        "From LCZ training areas to the LCZ map and its factsheet in one step, as the LCZ Generator (Demuzere et "
        "al. 2021) does it: (1) 'Fetch Sentinel-2 for an extent' fetches the Sentinel-2 L2A stack of EXTENT from a "
        "STAC API (Earth Search by default) for START_DATE to END_DATE, a cloud-free composite of the clearest "
        "MAX_DATES dates; the training areas must lie inside EXTENT (the samples are taken from this one stack: "
        "areas outside it give no samples); (2) 'Train DF4LCZ model' trains on the training areas (a polygon "
        "layer or a WUDAPT KML/KMZ, read as that algorithm reads them) with BOOTSTRAPS 70/30 splits by polygon "
        "(default 25, as the Generator; each is a training: few bootstraps are quicker, their figures noisier), "
        "then the final model on all of them, fine-tuning Sen2LCZ-Net, or with VHR imagery the fused DF4LCZ "
        "model; with ENSEMBLE the bootstrap models are kept beside it as the members of an ensemble; (3) 'Classify "
        "local climate zones' maps EXTENT with that model at RESOLUTION (with ENSEMBLE, the mean of the "
        "probabilities of the final model and the bootstrap models: BOOTSTRAPS + 1 times the inference), raw and "
        "filtered "
        "(the Generator's Gaussian filter); (4) 'LCZ factsheet' writes the HTML factsheet (training areas per "
        "class, bootstrap boxplots, averaged confusion matrix, suspicious training areas, quicklooks of both maps "
        "and, with GLOBAL_MAP, a local copy of the global LCZ map, the agreement with it). Outputs: the LCZ map, "
        "the filtered map, the trained model, the training report, the suspicious training areas, the factsheet "
        "and the Sentinel-2 stack. QGIS runs the steps in order and stops at the first that fails, with its "
        "message."))
    add_workflow_inputs(model)
    param = Source.fromModelParameter
    add_fetch(model, "", param("START_DATE"), param("END_DATE"), param("MAX_DATES"), 60, {"stack": "STACK"})
    stack = Source.fromChildOutput("fetch", "OUTPUT")
    areas = {"TRAINING_AREAS": param("TRAINING_AREAS"), "CLASS_FIELD": param("CLASS_FIELD")}
    add_child(model, "train", "df4lcz:trainmodel", "Train DF4LCZ model (bootstraps)", 720, 140,
              {"SENTINEL2": stack, **areas, "VHR": param("VHR"), "BOOTSTRAPS": param("BOOTSTRAPS"),
               "ENSEMBLE": param("ENSEMBLE"), "EPOCHS": param("EPOCHS")},
              {"TRAINED_MODEL": ("OUTPUT_MODEL", "Trained model"), "REPORT": ("REPORT", "Training report"),
               "SUSPICIOUS_AREAS": ("SUSPICIOUS_AREAS", "Suspicious training areas")})
    add_child(model, "classify", "df4lcz:classifylcz", "Classify local climate zones", 1020, 220,
              {"SENTINEL2": stack, "EXTENT": param("EXTENT"), "VHR": param("VHR"), "RESOLUTION": param("RESOLUTION"),
               "MODEL_FILE": Source.fromChildOutput("train", "OUTPUT_MODEL")},
              {"LCZ_MAP": ("OUTPUT", "LCZ map"), "FILTERED_MAP": ("FILTERED_OUTPUT", "Filtered LCZ map")})
    add_child(model, "factsheet", "df4lcz:lczfactsheet", "LCZ factsheet", 1320, 300,
              {"TRAINING_REPORT": Source.fromChildOutput("train", "REPORT"), **areas,
               "LCZ_MAP": Source.fromChildOutput("classify", "OUTPUT"),
               "FILTERED_MAP": Source.fromChildOutput("classify", "FILTERED_OUTPUT"),
               "GLOBAL_MAP": param("GLOBAL_MAP")},
              {"FACTSHEET": ("OUTPUT", "LCZ factsheet")})
    return model


def write(model: QgsProcessingModelAlgorithm, stem: str) -> Path:
    """Create the model's output parameters from its steps, order its inputs as placed (top to bottom) and save
    it as ``resources/models/<stem>.model3``."""
    model.updateDestinationParameters()
    inputs = sorted(model.parameterComponents().values(), key=lambda component: component.position().y())
    model.setParameterOrder([component.parameterName() for component in inputs])
    path = MODELS / f"{stem}.model3"
    if not model.toFile(str(path)):
        raise SystemExit(f"Could not write {path}.")
    return path


def main() -> None:
    """Write the three models."""
    app = QgsApplication([], False)
    app.initQgis()
    provider = load_provider()  # noqa: F841 (kept alive while the models are built)
    for stem, build in (("lcz_for_extent", lcz_for_extent), ("lcz_four_seasons", lcz_four_seasons),
                        ("lcz_from_training_areas", lcz_from_training_areas)):
        print(f"wrote {write(build(), stem).relative_to(ROOT)}")
    app.exitQgis()


if __name__ == "__main__":
    main()
