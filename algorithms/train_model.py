"""``df4lcz:trainmodel`` ("Train DF4LCZ model") on the user's own LCZ training areas."""

import itertools
import re
from pathlib import Path
from typing import Any, Optional

from qgis.core import (QgsApplication, QgsCoordinateReferenceSystem, QgsFeature, QgsFeatureSink, QgsFields,
                       QgsGeometry, QgsProcessingAlgorithm, QgsProcessingContext, QgsProcessingException,
                       QgsProcessingFeedback, QgsProcessingOutputNumber, QgsProcessingParameterBoolean,
                       QgsProcessingParameterFeatureSink, QgsProcessingParameterFeatureSource,
                       QgsProcessingParameterFile, QgsProcessingParameterFileDestination, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterString)
from qgis.PyQt.QtCore import QMetaType

from ..df4lcz_plugin.training.bootstrap import DEFAULT_BOOTSTRAPS, MAX_BOOTSTRAPS, check_bootstraps, check_ensemble
from ..df4lcz_plugin.training.training_areas import TrainingAreas
from ..df4lcz_plugin.models.registry import builtin_models_dir, model_files, user_models_dir
from ..df4lcz_plugin.training.members import member_path
from ..df4lcz_plugin.runtime.outputs import check_output_paths
from ..df4lcz_plugin.training.report import report_files
from .base import (DF4LCZAlgorithm, ProcessingFeedback, device_parameter, engine_errors, gdal_source,
                   segmentation_parameter, tr)
from .compat import FLAG_ADVANCED, NUMBER_INTEGER, SOURCE_VECTOR_POLYGON, WKB_MULTIPOLYGON, field
from .vhr_source import vhr_path

#: OGR field types (``ogr.OFTInteger``, ``OFTReal``, ``OFTString``, ``OFTInteger64``) → QMetaType; others as text.
_OGR_TYPES = {0: QMetaType.Type.Int, 2: QMetaType.Type.Double, 4: QMetaType.Type.QString,
              12: QMetaType.Type.LongLong}
#: The fields SUSPICIOUS_AREAS adds to each training area's own (``bootstrap.out_of_fold``).
_OOF_FIELDS = (("oof_share", QMetaType.Type.Double), ("oof_class", QMetaType.Type.QString),
               ("oof_boots", QMetaType.Type.Int), ("suspicious", QMetaType.Type.Int))


def default_model_path() -> Path:
    """OUTPUT_MODEL's default: ``df4lcz_model.safetensors`` in the user model folder, or ``df4lcz_model_2…`` when
    that model exists, so a second training with the default never replaces the first (chosen per dialog/run)."""
    for n in itertools.count(1):
        path = user_models_dir() / ("df4lcz_model.safetensors" if n == 1 else f"df4lcz_model_{n}.safetensors")
        if not any(part.exists() for part in model_files(path)):
            return path
    raise AssertionError("unreachable: itertools.count never ends")


def training_areas_file(algorithm: QgsProcessingAlgorithm, parameters: dict[str, Any], name: str,
                        context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> tuple[str, str]:
    """(path, layer name) of the training areas parameter ``name`` as a file the engine (GDAL) reads: the layer's
    own file when GDAL can, else (memory layers, selected features, other providers) a GeoPackage copy. Raises
    QgsProcessingException when the source cannot be read."""
    path, layer = algorithm.parameterAsCompatibleSourceLayerPathAndLayerName(
        parameters, name, context, ["gpkg", "shp", "geojson", "json", "kml", "kmz", "sqlite"], "gpkg", feedback)
    if not path:
        raise QgsProcessingException(algorithm.invalidSourceError(parameters, name))
    return path, layer


def _vector_file(destination: Optional[str]) -> Optional[str]:
    """The file a vector destination writes (``ogr:dbname='…' table=…`` and ``path|layername=…`` forms too), or
    None for a temporary or memory layer."""
    text = (destination or "").strip()
    if not text or text.startswith("memory:") or text == "TEMPORARY_OUTPUT":
        return None
    if text.startswith("ogr:"):
        match = re.search(r"dbname='([^']+)'", text)
        return match.group(1) if match else None
    return text.split("|", 1)[0]


class TrainModelAlgorithm(DF4LCZAlgorithm):
    SENTINEL2 = "SENTINEL2"
    VHR = "VHR"
    SEGMENTATION = "SEGMENTATION"
    TRAINING_AREAS = "TRAINING_AREAS"
    CLASS_FIELD = "CLASS_FIELD"
    FINE_TUNE = "FINE_TUNE"
    BASE_MODEL = "BASE_MODEL"
    EPOCHS = "EPOCHS"
    BATCH_SIZE = "BATCH_SIZE"
    DEVICE = "DEVICE"
    SEED = "SEED"
    POINTS_PER_SIDE = "POINTS_PER_SIDE"
    BOOTSTRAPS = "BOOTSTRAPS"
    ENSEMBLE = "ENSEMBLE"
    OUTPUT_MODEL = "OUTPUT_MODEL"
    REPORT = "REPORT"
    SUSPICIOUS_AREAS = "SUSPICIOUS_AREAS"

    needs = "full"  # PyTorch: training (and SAM with VHR).
    description = "Trains an LCZ model on your own training areas (polygons or a WUDAPT KML) and reports its accuracy."
    keywords = ("train", "training areas", "deep learning", "fine-tune", "model", "df4lcz")
    icon_name = "train_model"

    def name(self) -> str:
        return "trainmodel"

    def displayName(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("Train DF4LCZ model")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("Trains a DF4LCZ model on your LCZ training areas (TAs), as the WUDAPT community does for a city, "
                  "and assesses it as the LCZ Generator does (Demuzere et al. 2021).\n\n"
                  "Training areas: a polygon layer of the project or a file (only its selected features if so "
                  "ticked), with an LCZ class field (1–17, WUDAPT-2015 101–107, or A–G), or a WUDAPT "
                  "KML/KMZ with one folder per class (1–10, A–G). Polygons of 0.3 km² or more are replaced by the "
                  "300 m buffer around their centroid (so that large forest or water polygons do not dominate); "
                  "patch centres are sampled every 50 m inside the polygons. A class needs at least 3 polygons; "
                  "classes with fewer are left out with a warning, and fewer than 2 classes left is refused. Class "
                  "balance: the loss is weighted by inverse class frequency.\n\n"
                  "BOOTSTRAPS (1–100, default 25 as the LCZ Generator): each bootstrap draws, per class, 30 % of the "
                  "polygons (at least 1) as held-out test polygons and trains on the other 70 %, of which 20 % (at "
                  "least 1) are the validation polygons that early stopping, the best epoch and the fusion weight α "
                  "need; it is then assessed on its held-out polygons. The same SEED draws the same bootstraps. The "
                  "report gives the median and interquartile range (IQR) of OA, OA_u, OA_bu, OA_w and kappa and of "
                  "each class's F1, their boxplots (a PNG beside the report) and the averaged confusion matrix. "
                  "Then the final model is trained on all the training areas (20 % of each class's polygons, at "
                  "least 1, validating), and its card records the bootstrap figures. The run takes about "
                  "BOOTSTRAPS + 1 trainings; progress and the time left are over the whole run. Each finished "
                  "bootstrap is kept in the report's .bootstraps.jsonl: a cancel during the bootstraps keeps those "
                  "done (the report says how many) and writes no model; a re-run of the same training, even after "
                  "a kill, resumes from them.\n\n"
                  "ENSEMBLE (off by default, needs BOOTSTRAPS ≥ 2): each bootstrap's model is also kept, as a model "
                  "of its own (its Sentinel-2 stream), in a folder beside the model (<model>.members/), and the "
                  "model's card lists them with their sha256. Classifying with the model then maps with the mean of "
                  "the class probabilities of the final model and of every bootstrap model (any back-end, precision "
                  "and TTA; a VHR stream stays the final model's); a member missing or changed is refused. It costs "
                  "BOOTSTRAPS + 1 times the inference of one model, and no training (measured with 2 bootstraps on "
                  "2,500 cells at 100 m, OpenVINO on 2 CPU cores: 10 s instead of 3.5 s; 25 bootstraps: about 26×). "
                  "Whether it gains accuracy cannot be measured on held-out polygons (the bootstrap models trained "
                  "on the polygons that the others held out); the levers bench found no gain in averaging fine-tunes "
                  "of the same polygons. A resumed run keeps a finished bootstrap only when its member is there as "
                  "that bootstrap wrote it, and trains it again otherwise.\n\n"
                  "SUSPICIOUS_AREAS (optional): every training polygon with its own fields plus its out-of-fold "
                  "figures over the bootstraps that held it out: oof_share (the share of its samples mapped as its "
                  "own class), oof_class (the LCZ mapped most often instead, as its label 1–10 or A–G), oof_boots "
                  "(how many bootstraps held it out) and suspicious: 1 when oof_boots ≥ 2 and oof_share < 0.5, else "
                  "0. The report lists the flagged ones; check their class and outline against the imagery. With "
                  "few bootstraps most polygons are held out fewer than 2 times, so none can be flagged.\n\n"
                  "Sentinel-2 stream: the pretrained Sen2LCZ-Net fine-tuned (default, fast on a CPU), or the DF4LCZ "
                  "3D ResNet11 from scratch (untick 'Fine-tune'; a GPU job). With VHR imagery the GCN stream is "
                  "trained on SAM graphs of each sample's footprint (made once for all the bootstraps) and the "
                  "fusion weight α chosen on validation. "
                  "SEGMENTATION (advanced): tiles (default) runs SAM once per 320 m tile of a fixed grid and "
                  "composes each footprint's objects from its tiles, as samples every 50 m overlap many times; "
                  "footprint is the paper's, SAM on each footprint. The card records it, and classification "
                  "with the model uses the same kind of graph. The card also records the stack's Sentinel-2 "
                  "processing level (L1C or L2A, from its metadata), so that classifying a stack of the other level "
                  "warns; a model fine-tuned on L2A stacks is an L2A model.\n\n"
                  "Progress is reported per epoch with the loss and validation OA, and per bootstrap with its "
                  "figures and the time left; cancelling the final model's training keeps its best weights so far. "
                  "Outputs: the model (.safetensors + .json card with the training summary and the bootstrap "
                  "figures; by default df4lcz_model.safetensors in the user model folder, or df4lcz_model_2… when "
                  "that exists, as the dialog shows, so that 'Classify local climate zones' lists it under its file "
                  "name), the accuracy report and the suspicious training areas.")

    def initAlgorithm(self, config: Optional[dict[str, Any]] = None) -> None:  # noqa: N802 (QGIS API name)
        self.addParameter(QgsProcessingParameterRasterLayer(self.SENTINEL2, tr("Sentinel-2 stack (10 bands)")))
        self.addParameter(QgsProcessingParameterRasterLayer(self.VHR, tr("High-resolution (VHR) imagery"),
                                                            optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.TRAINING_AREAS, tr("LCZ training areas (polygons, or a WUDAPT KML/KMZ)"),
            [SOURCE_VECTOR_POLYGON]))
        self.addParameter(QgsProcessingParameterString(self.CLASS_FIELD, tr("Class field (empty: lcz, class… or the "
                                                                            "KML folders)"), optional=True))
        self.addParameter(QgsProcessingParameterBoolean(self.FINE_TUNE, tr("Fine-tune the pretrained Sen2LCZ-Net "
                                                                           "(else 3D ResNet11 from scratch)"), True))
        self.addParameter(QgsProcessingParameterFile(self.BASE_MODEL, tr("Base model to fine-tune (default: the "
                                                                         "shipped Sen2LCZ-Net)"), optional=True,
                                                     fileFilter="DF4LCZ model (*.safetensors *.json)"))
        self.addParameter(QgsProcessingParameterNumber(self.EPOCHS, tr("Epochs"),
                                                       NUMBER_INTEGER, 30, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(self.BATCH_SIZE, tr("Batch size"),
                                                       NUMBER_INTEGER, 64, minValue=1))
        self.addParameter(device_parameter(self.DEVICE))
        seed = QgsProcessingParameterNumber(self.SEED, tr("Random seed"), NUMBER_INTEGER, 0)
        points = QgsProcessingParameterNumber(self.POINTS_PER_SIDE, tr("SAM points per side (paper: 12)"),
                                              NUMBER_INTEGER, 12, minValue=1)
        for parameter in (seed, points):
            parameter.setFlags(parameter.flags() | FLAG_ADVANCED)
            self.addParameter(parameter)
        self.addParameter(segmentation_parameter(self.SEGMENTATION))
        self.addParameter(QgsProcessingParameterNumber(
            self.BOOTSTRAPS, tr("Bootstraps (70/30 splits by polygon; LCZ Generator: 25)"), NUMBER_INTEGER,
            DEFAULT_BOOTSTRAPS, minValue=1, maxValue=MAX_BOOTSTRAPS))
        self.addParameter(QgsProcessingParameterBoolean(
            self.ENSEMBLE, tr("Ensemble: keep the bootstrap models and average them with the final model (needs "
                              "BOOTSTRAPS ≥ 2)"), False))
        # A default path, which the dialog shows: the model is always saved, by default where 'Classify' finds it.
        # Optional only because qgis_process 3.22 demands every mandatory output, defaults ignored; left empty or
        # skipped, it is still the default path.
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_MODEL, tr("Trained model ('Classify' lists those of the user model folder, by file name)"),
            "DF4LCZ model (*.safetensors)", str(default_model_path()), optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.REPORT, tr("Accuracy report (bootstraps, held-out polygons)"), "HTML (*.html)"))
        self.addParameter(QgsProcessingParameterFeatureSink(
            self.SUSPICIOUS_AREAS, tr("Suspicious training areas (out-of-fold figures per polygon)"),
            SOURCE_VECTOR_POLYGON, optional=True, createByDefault=False))
        for name in ("OA", "OA_w", "kappa"):
            self.addOutput(QgsProcessingOutputNumber(name, tr("Median over the bootstraps:") + f" {name}"))

    def checkParameterValues(self, parameters: dict[str, Any],  # noqa: N802 (QGIS API name)
                             context: QgsProcessingContext) -> tuple[bool, str]:
        # Before QGIS's own range check, which says "Incorrect parameter value" alone.
        try:
            bootstraps = float(parameters.get(self.BOOTSTRAPS, DEFAULT_BOOTSTRAPS))
            check_bootstraps(bootstraps)
            check_ensemble(bootstraps, self.parameterAsBool(parameters, self.ENSEMBLE, context))
        except (TypeError, ValueError) as error:
            if str(error).startswith(("BOOTSTRAPS", "ENSEMBLE")):
                return False, str(error)
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802 (QGIS API)
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        from ..df4lcz_plugin.runtime.device import resolve_device
        from ..df4lcz_plugin.training.train import train_on_training_areas
        from ..df4lcz_plugin.training.training_areas import read_training_areas

        s2 = self.parameterAsRasterLayer(parameters, self.SENTINEL2, context)
        vhr = self.parameterAsRasterLayer(parameters, self.VHR, context) if parameters.get(self.VHR) else None
        areas_path, areas_layer = training_areas_file(self, parameters, self.TRAINING_AREAS, context, feedback)
        model_path = self.parameterAsFileOutput(parameters, self.OUTPUT_MODEL, context)
        report = self.parameterAsFileOutput(parameters, self.REPORT, context)
        base = None
        if self.parameterAsBool(parameters, self.FINE_TUNE, context):
            base = (self.parameterAsFile(parameters, self.BASE_MODEL, context)
                    or str(builtin_models_dir() / "sen2lcznet_so2sat.json"))
        bootstraps = self.parameterAsInt(parameters, self.BOOTSTRAPS, context)
        ensemble = self.parameterAsBool(parameters, self.ENSEMBLE, context)
        members = [part for b in range(bootstraps) for part in model_files(member_path(model_path, b))]
        with engine_errors():
            check_bootstraps(bootstraps)
            check_ensemble(bootstraps, ensemble)
            check_output_paths(
                {self.SENTINEL2: gdal_source(s2, self.SENTINEL2), self.TRAINING_AREAS: areas_path,
                 self.BASE_MODEL: model_files(base) if base else None,
                 self.VHR: gdal_source(vhr, self.VHR) if vhr and vhr.providerType() == "gdal" else None},
                {self.OUTPUT_MODEL: (model_files(model_path)[::-1] + (members if ensemble else []), (".safetensors",)),
                 self.REPORT: (report_files(report), (".html", ".htm")),
                 self.SUSPICIOUS_AREAS: ([_vector_file(self.parameterAsOutputLayer(parameters, self.SUSPICIOUS_AREAS,
                                                                                   context))], None)})
            areas = read_training_areas(areas_path, self.parameterAsString(parameters, self.CLASS_FIELD, context)
                                        or None, areas_layer or None)
            card, summary, oof = train_on_training_areas(
                gdal_source(s2, self.SENTINEL2), areas, model_path, report, base_model=base,
                vhr_path=vhr_path(vhr, None, s2.crs(), context, feedback) if vhr else None,
                epochs=self.parameterAsInt(parameters, self.EPOCHS, context),
                batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
                device=resolve_device(self.parameterAsEnumString(parameters, self.DEVICE, context)),
                seed=self.parameterAsInt(parameters, self.SEED, context),
                amg_settings={"points_per_side": self.parameterAsInt(parameters, self.POINTS_PER_SIDE, context)},
                feedback=ProcessingFeedback(feedback),
                segmentation=self.parameterAsEnumString(parameters, self.SEGMENTATION, context),
                bootstraps=bootstraps, ensemble=ensemble)
        median = summary["median"]
        feedback.pushInfo(f"Model {card}; over {summary['bootstraps']} bootstraps, median OA {median['OA']:.3f}, "
                          f"OA_w {median['OA_w']:.3f}, kappa {median['kappa']:.3f}")
        results = {self.OUTPUT_MODEL: str(Path(card).with_suffix(".safetensors")), self.REPORT: report,
                   **{name: median[name] for name in ("OA", "OA_w", "kappa")}}
        suspicious = self._write_suspicious(parameters, context, areas, oof)
        if suspicious:
            results[self.SUSPICIOUS_AREAS] = suspicious
        return results

    def _write_suspicious(self, parameters: dict[str, Any], context: QgsProcessingContext, areas: TrainingAreas,
                          oof: list[dict[str, Any]]) -> Optional[str]:
        """SUSPICIOUS_AREAS: every training polygon (as read, uncapped) with its own fields and the out-of-fold
        ones; its destination, or None when not asked for."""
        own = [name for name, _ in areas.fields]
        fields = QgsFields()
        for name, kind in areas.fields:
            fields.append(field(name, _OGR_TYPES.get(kind, QMetaType.Type.QString)))
        for name, kind in _OOF_FIELDS:
            if fields.indexOf(name) < 0:  # a source field of that name gets our value
                fields.append(field(name, kind))
        sink, dest = self.parameterAsSink(parameters, self.SUSPICIOUS_AREAS, context, fields, WKB_MULTIPOLYGON,
                                          QgsCoordinateReferenceSystem.fromWkt(areas.srs.ExportToWkt()))
        if sink is None:
            return None
        for index, geometry in enumerate(areas.geometries):
            shape = QgsGeometry()
            shape.fromWkb(geometry.ExportToWkb())
            shape.convertToMultiType()
            values = {**dict(zip(own, areas.attributes[index])), **oof[index]}
            feature = QgsFeature(fields)
            feature.setGeometry(shape)
            feature.setAttributes([values.get(f.name()) for f in fields])
            sink.addFeature(feature, QgsFeatureSink.Flag.FastInsert)
        return dest

    def postProcessAlgorithm(self, context: QgsProcessingContext,  # noqa: N802 (QGIS API name)
                             feedback: QgsProcessingFeedback) -> dict[str, Any]:
        # Main thread: let 'Classify local climate zones' list the new model.
        provider = QgsApplication.processingRegistry().providerById("df4lcz")
        if provider is not None:
            provider.refreshAlgorithms()
        return {}
