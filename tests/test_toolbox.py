"""The Toolbox as a user meets it, in-process QGIS: one group holding the algorithms and the shipped models,
tags the Toolbox search finds, descriptions, Help opening each one's page of the shipped site, an icon each; DEVICE
and MODEL as lists stored by name; the models' ids and inputs; the trained-model output's default path in the
dialog."""

import html
import sys
from pathlib import Path

import pytest
from qgis.core import Qgis, QgsApplication, QgsProcessingContext, QgsProcessingParameterEnum
from qgis.PyQt.QtCore import QModelIndex, QUrl

from df4lcz_plugin.models.registry import list_models, user_models_dir


TAGS = {"lcz", "local climate zones", "urban", "climate", "wudapt", "sentinel-2", "classification",
        "segment anything"}
ALGORITHMS = {"sentinel2stack", "sentinel2composite", "classifylcz", "classifydates", "buildobjectgraphs", "trainmodel",
              "assessaccuracy", "lczparameters", "lczzonestatistics", "globallczmap", "lczfilter", "lcz_from_safe",
              "lcz_from_composite", "lcz_uses",
              "sentinel2fetch", "lcz_for_extent", "lcz_four_seasons", "lczfactsheet", "lcz_from_training_areas"}


@pytest.fixture(scope="module")
def algorithms(qgis_app):
    provider = QgsApplication.processingRegistry().providerById("df4lcz")
    return {alg.name(): alg for alg in provider.algorithms()}


def test_every_algorithm_and_model_has_toolbox_metadata(algorithms):
    assert set(algorithms) == ALGORITHMS  # model ids without spaces: df4lcz:lcz_from_safe, df4lcz:lcz_from_composite
    images = set()
    for name, alg in algorithms.items():
        assert (alg.groupId(), alg.group()) == ("lcz", "Local climate zones"), name
        assert TAGS <= set(alg.tags()), name
        assert alg.shortDescription(), name
        pixmap = alg.icon().pixmap(32)
        assert not pixmap.isNull(), name
        images.add(bytes(pixmap.toImage().constBits().asarray(32 * 32 * 4)))
    assert len(images) == len(algorithms)  # an icon of its own each


@pytest.mark.timeout(60)
def test_help_opens_each_ones_page_of_the_shipped_site(algorithms):
    """Help opens the algorithm's reference page in the documentation site the plugin carries
    (scripts/plugin_files.py), from the disk: it works offline."""
    for name, alg in algorithms.items():
        help_page = QUrl(alg.helpUrl())
        assert help_page.isLocalFile(), (name, alg.helpUrl())
        page = Path(help_page.toLocalFile())
        assert page.name == f"{name}.html" and page.parent.parent.name == "docs_site", page
        title = f"<title>{html.escape(alg.displayName(), quote=False)} - DF4LCZ for QGIS</title>"
        assert title in page.read_text(encoding="utf-8"), page


def test_toolbox_shows_one_group_and_search_finds_the_classifier(qgis_app):
    from qgis.gui import QgsProcessingToolboxModel, QgsProcessingToolboxProxyModel

    registry = QgsApplication.processingRegistry()
    model = QgsProcessingToolboxModel(None, registry)
    provider = model.indexForProvider("df4lcz")
    assert model.rowCount(provider) == 1  # one group, the models in it
    group = model.index(0, 0, provider)
    assert model.algorithmForIndex(group) is None and model.data(group) == "Local climate zones"
    assert model.rowCount(group) == len(ALGORITHMS)
    proxy = QgsProcessingToolboxProxyModel(None, registry)
    for term in ("urban", "wudapt", "classification"):
        proxy.setFilterString(term)
        found, pending = [], [QModelIndex()]
        while pending:
            parent = pending.pop()
            for row in range(proxy.rowCount(parent)):
                index = proxy.index(row, 0, parent)
                alg = proxy.toolboxModel().algorithmForIndex(proxy.mapToSource(index))
                found += [alg.id()] if alg else []
                pending.append(index)
        assert "df4lcz:classifylcz" in found, term


def test_device_and_model_are_lists_stored_by_name(algorithms):
    try:
        import torch
        gpus = torch.cuda.device_count()
    except ImportError:  # the light install: no GPU can be used
        gpus = 0
    devices = ["auto", "cpu"] + (["cuda"] if gpus else []) + [f"cuda:{i}" for i in range(gpus)]  # PyTorch's GPUs
    for name in ("classifylcz", "trainmodel", "buildobjectgraphs"):
        device = algorithms[name].parameterDefinition("DEVICE")
        assert isinstance(device, QgsProcessingParameterEnum) and device.usesStaticStrings(), name
        assert device.options() == devices and device.defaultValue() == "auto", name
    model = algorithms["classifylcz"].parameterDefinition("MODEL")
    assert model.usesStaticStrings() and model.options() == [card.id for card in list_models()]
    assert model.defaultValue() == "sen2lcznet_so2sat"
    assert "Sen2LCZ-Net" in model.help()  # the titles, in the tooltip


def test_every_list_parameter_is_stored_by_name(algorithms):
    """Every list of every algorithm and shipped model keeps its option's text, and the lists the engine reads
    offer the engine's own names."""
    lists = {(name, p.name()): p for name, alg in algorithms.items() for p in alg.parameterDefinitions()
             if isinstance(p, QgsProcessingParameterEnum)}
    assert {key for key, p in lists.items() if not p.usesStaticStrings()} == set()
    assert lists[("classifylcz", "BACKEND")].options() == ["auto", "openvino", "pytorch"]
    assert lists[("classifylcz", "PRECISION")].options() == ["f32", "bf16"]
    assert lists[("classifylcz", "PALETTE")].options() == ["official_2022", "classic_wudapt"]
    for name in ("sentinel2stack", "sentinel2composite"):
        assert lists[(name, "CLOUD_MASK")].options() == ["auto", "product", "s2cloudless", "none"]
        assert lists[(name, "CLOUD_MASK")].defaultValue() == "auto"


@pytest.mark.parametrize("name, first", [("lcz_from_safe", "SAFE"), ("lcz_from_composite", "INPUTS")])
def test_models_ask_for_sentinel2_first(algorithms, name, first):
    alg = algorithms[name].create()  # what the dialog shows
    assert alg.id() == f"df4lcz:{name}" and alg.groupId() == "lcz"
    assert [p.name() for p in alg.parameterDefinitions()][:3] == [first, "EXTENT", "RESOLUTION"]


def test_trained_model_output_shows_its_default_path(algorithms):
    """The dialog's widget for OUTPUT_MODEL (as processing's ParametersPanel makes it) holds the default path."""
    from qgis.gui import QgsGui, QgsProcessingGui

    definition = algorithms["trainmodel"].parameterDefinition("OUTPUT_MODEL")
    # Qgis.ProcessingMode since QGIS 3.36
    standard = Qgis.ProcessingMode.Standard if hasattr(Qgis, "ProcessingMode") else QgsProcessingGui.WidgetType.Standard
    wrapper = QgsGui.processingGuiRegistry().createParameterWidgetWrapper(definition, standard)
    widget = wrapper.createWrappedWidget(QgsProcessingContext())  # the caller owns it: keep it alive
    assert widget.isEnabled() and wrapper.parameterValue() == str(_train_module(algorithms).default_model_path())
    assert Path(wrapper.parameterValue()).parent == user_models_dir()


def _train_module(algorithms):
    """The module of the loaded plugin's trainmodel (imported by QGIS as part of the plugin package)."""
    return sys.modules[type(algorithms["trainmodel"]).__module__]


def test_the_default_model_path_never_replaces_a_model(algorithms, monkeypatch, tmp_path):
    default_model_path = _train_module(algorithms).default_model_path
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    models = tmp_path / "df4lcz/models"
    assert default_model_path() == models / "df4lcz_model.safetensors"
    models.mkdir(parents=True)
    (models / "df4lcz_model.json").write_text("{}")  # a card alone is a model half-written or half-deleted: kept
    assert default_model_path() == models / "df4lcz_model_2.safetensors"
    (models / "df4lcz_model_2.safetensors").write_bytes(b"")
    assert default_model_path() == models / "df4lcz_model_3.safetensors"
