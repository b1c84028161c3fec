"""``df4lcz:buildobjectgraphs`` ("Extract SAM objects"): SAM objects of VHR imagery as polygons, plus graphs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Optional

from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsFeature, QgsFeatureSink, QgsFields,
                       QgsGeometry, QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback,
                       QgsProcessingOutputNumber, QgsProcessingParameterBoolean,
                       QgsProcessingParameterExtent, QgsProcessingParameterFeatureSink, QgsProcessingParameterFile,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterLayer, QgsRasterLayer)
from qgis.PyQt.QtCore import QMetaType

from ..df4lcz_plugin.runtime.outputs import check_output_paths
from ..df4lcz_plugin.vhr.sam import PAPER_AMG_SETTINGS
from .base import (DF4LCZAlgorithm, ProcessingFeedback, device_parameter, engine_errors, gdal_source,
                   segmentation_parameter, tr)
from .compat import FLAG_ADVANCED, NUMBER_DOUBLE, NUMBER_INTEGER, SOURCE_VECTOR_POLYGON, WKB_MULTIPOLYGON, field
from .vhr_source import metric_crs, vhr_path, vhr_source_id

if TYPE_CHECKING:
    from ..df4lcz_plugin.vhr.objects import PatchObjects

_AMG_PARAMETERS = {  # parameter name → (AMG argument, label, integer?, minimum)
    "POINTS_PER_SIDE": ("points_per_side", "Points per side", True, 1),
    "PRED_IOU_THRESH": ("pred_iou_thresh", "Predicted IoU threshold", False, 0),
    "STABILITY_SCORE_THRESH": ("stability_score_thresh", "Stability score threshold", False, 0),
    "BOX_NMS_THRESH": ("box_nms_thresh", "Box NMS threshold", False, 0),
    "CROP_N_LAYERS": ("crop_n_layers", "Crop layers", True, 0),
    "CROP_NMS_THRESH": ("crop_nms_thresh", "Crop NMS threshold", False, 0),
    # SAM divides the crop layers' point grid by this factor to the power of the layer: 0 would divide by zero.
    "CROP_N_POINTS_DOWNSCALE_FACTOR": ("crop_n_points_downscale_factor", "Crop points downscale factor", True, 1),
    "MIN_MASK_REGION_AREA": ("min_mask_region_area", "Minimum mask region area (px)", True, 0),
}


class BuildObjectGraphsAlgorithm(DF4LCZAlgorithm):
    VHR = "VHR"
    EXTENT = "EXTENT"
    CHECKPOINT = "CHECKPOINT"
    GRAPH_RADIUS = "GRAPH_RADIUS"
    FAST_SAM = "FAST_SAM"
    DEVICE = "DEVICE"
    CLASSIFICATION_GRID = "CLASSIFICATION_GRID"
    RESOLUTION = "RESOLUTION"
    SEGMENTATION = "SEGMENTATION"
    OUTPUT = "OUTPUT"
    GRAPHS = "GRAPHS"
    SAM_RUNS = "SAM_RUNS"
    GRAPH_CACHE_HITS = "GRAPH_CACHE_HITS"

    needs = "full"  # PyTorch: SAM and the object graphs.
    description = "Segments VHR imagery into objects with Segment Anything (SAM) and builds their graphs."
    keywords = ("sam", "segmentation", "objects", "graph", "vhr", "orthophoto", "graph cache")
    icon_name = "build_object_graphs"

    def name(self) -> str:
        return "buildobjectgraphs"

    def displayName(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("Extract SAM objects")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API name)
        return tr("Segments high-resolution imagery into objects (roofs, trees, lawns, roads) with Segment Anything, "
                "as DF4LCZ's high-resolution stream sees them, and builds their graphs.\n\n"
                "The extent is cut into 320 m patches, each resampled to 320 × 320 px (1 m) and segmented by "
                "automatic mask generation with the paper's settings (12 × 12 points, predicted IoU 0.88, "
                "stability 0.92, box NMS 0.4, 1 crop layer, crop NMS 0.4, downscale 2, min region 100 px; "
                "advanced parameters). Masks under 50 px are dropped and the 50 largest kept.\n\n"
                "VHR: any raster layer with RGB in bands 1–3 at ≤ 5 m (other than 8-bit: stretched to 0–255 between "
                "each band's 2nd and 98th percentile), in any CRS (work is done in metres: in a "
                "geographic or Web Mercator CRS, in the UTM zone of the extent). Web and tile layers (WMS, XYZ) "
                "need an EXTENT; they are rendered at 1 m over it first.\n\n"
                "Checkpoint: MobileSAM (vit_t) by default, or any official SAM checkpoint (vit_b, vit_l, vit_h); "
                "the architecture is read from the file.\n\n"
                "Outputs: a polygon layer of the kept objects (patch id, object rank, area in m², node features "
                "R, G, B, cx, cy in [0, 1], predicted IoU, stability score) and a graph file (.npz: x, edge_index, "
                "edge_weight, node_patch, patch_bounds, crs_wkt, settings_json) to feed training.\n\n"
                "Graph cache mode: give the Sentinel-2 stack, EXTENT and RESOLUTION of a classification as "
                "CLASSIFICATION_GRID: SAM then runs on exactly the 320 m footprints 'Classify local climate zones' "
                "will use, and their graphs go into the graph cache (no polygons, no graph file), so that SAM runs "
                "once, overnight or on a GPU machine, and later classifications and trainings with the same imagery "
                "reuse them. Use the SAM settings, graph radius and SEGMENTATION of the model you will classify "
                "with (the defaults are those 'Train DF4LCZ model' uses). SEGMENTATION tiles (default): SAM runs "
                "once per 320 m tile of a fixed grid and each footprint's objects are composed from its tiles, "
                "so overlapping footprints share the work; footprint: the paper's, SAM on each footprint.")

    def initAlgorithm(self, config: Optional[dict[str, Any]] = None) -> None:  # noqa: N802 (QGIS API name)
        self.addParameter(QgsProcessingParameterRasterLayer(self.VHR, tr("High-resolution (VHR) imagery")))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, tr("Extent"), optional=True))
        self.addParameter(QgsProcessingParameterFile(self.CHECKPOINT, tr("SAM checkpoint (default: MobileSAM)"),
                                                     optional=True, fileFilter="PyTorch checkpoint (*.pt *.pth)"))
        self.addParameter(device_parameter(self.DEVICE))
        advanced = [QgsProcessingParameterNumber(self.GRAPH_RADIUS, tr("Graph radius (fraction of the 320 m patch)"),
                                                 NUMBER_DOUBLE, 0.25, minValue=0.0),
                    QgsProcessingParameterBoolean(
                        self.FAST_SAM, tr("Fast SAM (bfloat16, pays on a GPU only; not the paper-exact masks)"), False)]
        for name, (argument, label, integer, minimum) in _AMG_PARAMETERS.items():
            kind = NUMBER_INTEGER if integer else NUMBER_DOUBLE
            advanced.append(QgsProcessingParameterNumber(name, tr(label), kind, PAPER_AMG_SETTINGS[argument],
                                                         minValue=minimum))
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | FLAG_ADVANCED)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.CLASSIFICATION_GRID, tr("Fill the graph cache for the cells of this Sentinel-2 stack instead"),
            optional=True))
        self.addParameter(QgsProcessingParameterNumber(self.RESOLUTION, tr("Resolution of that classification (m)"),
                                                       NUMBER_DOUBLE, 100.0, minValue=10.0))
        self.addParameter(segmentation_parameter(self.SEGMENTATION))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, tr("SAM objects"),
                                                            SOURCE_VECTOR_POLYGON, optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(self.GRAPHS, tr("Object graphs"),
                                                                "Object graphs (*.npz)", optional=True))
        self.addOutput(QgsProcessingOutputNumber(self.SAM_RUNS, tr("SAM runs (graph cache mode)")))
        self.addOutput(QgsProcessingOutputNumber(self.GRAPH_CACHE_HITS, tr("Graphs already cached (graph cache mode)")))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802 (QGIS API)
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        from ..df4lcz_plugin.runtime import assets
        from ..df4lcz_plugin.runtime.device import resolve_device
        from ..df4lcz_plugin.vhr.objects import default_settings, extract_objects, write_graph_file

        layer = self.parameterAsRasterLayer(parameters, self.VHR, context)
        amg = {argument: (self.parameterAsInt if integer else self.parameterAsDouble)(parameters, name, context)
               for name, (argument, _, integer, _) in _AMG_PARAMETERS.items()}
        rule = {"rule": "radius", "radius": self.parameterAsDouble(parameters, self.GRAPH_RADIUS, context)}
        if parameters.get(self.CLASSIFICATION_GRID):
            return self._fill_cache(layer, parameters, context, feedback, amg, rule)
        bounds, crs = self._metric_bounds(layer, parameters, context)
        source = vhr_path(layer, bounds if parameters.get(self.EXTENT) else None, crs, context, feedback)
        graphs_path = self.parameterAsFileOutput(parameters, self.GRAPHS, context)
        fields = _object_fields()
        with engine_errors():
            check_output_paths(
                {self.VHR: source, self.CHECKPOINT: self.parameterAsFile(parameters, self.CHECKPOINT, context)},
                {self.OUTPUT: ([self.parameterAsOutputLayer(parameters, self.OUTPUT, context).split("|")[0]], None),
                 self.GRAPHS: ([graphs_path], (".npz",))})
            checkpoint = self.parameterAsFile(parameters, self.CHECKPOINT, context) or str(
                assets.fetch_member(assets.MOBILE_SAM))
            device = resolve_device(self.parameterAsEnumString(parameters, self.DEVICE, context))
            patches = extract_objects(source, bounds, crs.toWkt(), checkpoint, device, amg,
                                      rule, ProcessingFeedback(feedback),
                                      self.parameterAsBool(parameters, self.FAST_SAM, context))
            sink, dest_id = self.parameterAsSink(parameters, self.OUTPUT, context, fields,
                                                 WKB_MULTIPOLYGON, crs)
            if sink is None:
                raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
            srs_wkt = crs.toWkt()
            objects = _add_objects(sink, fields, patches, srs_wkt)
            settings = default_settings(amg, rule, assets.sha256_of(checkpoint))
            if graphs_path:  # GRAPHS is optional: the polygons alone were asked for
                write_graph_file(graphs_path, patches, srs_wkt, settings)
        feedback.pushInfo(f"{objects} objects in {len(patches)} patch(es); settings {json.dumps(settings)}")
        results = {self.OUTPUT: dest_id}
        if graphs_path:
            results[self.GRAPHS] = graphs_path
        return results

    def _metric_bounds(self, layer: QgsRasterLayer, parameters: dict[str, Any], context: QgsProcessingContext
                       ) -> tuple[tuple[float, float, float, float], QgsCoordinateReferenceSystem]:
        """(xmin, ymin, xmax, ymax) of EXTENT (default: the VHR layer's extent) in the metric CRS the work is done
        in (``vhr_source.metric_crs``), and that CRS."""
        if parameters.get(self.EXTENT):
            extent = self.parameterAsExtent(parameters, self.EXTENT, context)
            extent_crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
        else:
            extent, extent_crs = layer.extent(), layer.crs()
        crs = metric_crs(extent_crs, extent.center(), context)
        extent = QgsCoordinateTransform(extent_crs, crs, context.transformContext()).transformBoundingBox(extent)
        return (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()), crs

    def _fill_cache(self, layer: QgsRasterLayer, parameters: dict[str, Any], context: QgsProcessingContext,
                    feedback: QgsProcessingFeedback, amg: dict[str, float], rule: dict[str, Any]) -> dict[str, Any]:
        """Graph cache mode: SAM on exactly the footprints of 'Classify local climate zones' with the same
        SENTINEL2 (CLASSIFICATION_GRID), EXTENT and RESOLUTION; no polygons or graph file."""
        from ..df4lcz_plugin.runtime.device import resolve_device
        from ..df4lcz_plugin.vhr.stream import fill_graph_cache

        grid_layer = self.parameterAsRasterLayer(parameters, self.CLASSIFICATION_GRID, context)
        rule = {**rule, "segmentation": self.parameterAsEnumString(parameters, self.SEGMENTATION, context)}
        crs = grid_layer.crs()
        extent = (self.parameterAsExtent(parameters, self.EXTENT, context, crs) if parameters.get(self.EXTENT)
                  else grid_layer.extent())
        bounds = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
        source = vhr_path(layer, bounds, crs, context, feedback)
        with engine_errors():
            summary = fill_graph_cache(
                source, gdal_source(grid_layer, self.CLASSIFICATION_GRID), bounds,
                self.parameterAsDouble(parameters, self.RESOLUTION, context),
                resolve_device(self.parameterAsEnumString(parameters, self.DEVICE, context)),
                self.parameterAsFile(parameters, self.CHECKPOINT, context) or None, amg, rule, vhr_source_id(layer),
                ProcessingFeedback(feedback), self.parameterAsBool(parameters, self.FAST_SAM, context))
        feedback.pushInfo(f"Graph cache: {summary['cells']} cells, {summary['sam_runs']} SAM runs, "
                          f"{summary['graph_cache_hits']} graphs were already cached.")
        return {self.SAM_RUNS: summary["sam_runs"], self.GRAPH_CACHE_HITS: summary["graph_cache_hits"]}


def _object_fields() -> QgsFields:
    """The fields of the SAM objects layer: patch and object ids, area in m², node features, SAM's scores."""
    fields = QgsFields()
    for name in ("patch_id", "object_id", "area_m2", "r", "g", "b", "cx", "cy", "pred_iou", "stability"):
        fields.append(field(name, QMetaType.Type.Int if name.endswith("_id") else QMetaType.Type.Double))
    return fields


def _add_objects(sink: QgsFeatureSink, fields: QgsFields, patches: list[PatchObjects], srs_wkt: str) -> int:
    """Add each patch's kept objects to ``sink`` as polygons (in ``srs_wkt``) with their attributes
    (``_object_fields``); returns how many were added."""
    from ..df4lcz_plugin.vhr.objects import mask_polygons

    objects = 0
    for patch in patches:
        pixel_m2 = ((patch.bounds[2] - patch.bounds[0]) / patch.masks.masks.shape[-1]) ** 2 \
            if len(patch.masks) else 0.0
        for rank, mask in enumerate(patch.masks.masks):
            feature = QgsFeature(fields)
            geometry = QgsGeometry()
            geometry.fromWkb(bytes(mask_polygons(mask, patch.bounds, srs_wkt).ExportToWkb()))
            feature.setGeometry(geometry)
            scores = [float(patch.masks.predicted_iou[rank]), float(patch.masks.stability[rank])]
            feature.setAttributes([patch.patch_id, rank, float(mask.sum() * pixel_m2),
                                   *(float(v) for v in patch.graph.x[rank]), *scores])
            sink.addFeature(feature, QgsFeatureSink.Flag.FastInsert)
            objects += 1
    return objects
