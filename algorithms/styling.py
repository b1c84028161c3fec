"""Style, name and place LCZ outputs when the Toolbox or a model loads them (Processing loads outputs without
their .qml, names them after the parameter and puts each new layer on top)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Iterable

from qgis.core import (QgsMapLayer, QgsProcessingContext, QgsProcessingFeedback,
                       QgsProcessingLayerPostProcessorInterface, QgsProcessingUtils, QgsProject)


class OutputPostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Names the loaded layer, applies its ``.qml`` sidecar and puts the run's layers in order; runs on the main
    thread right after Processing adds the layer."""

    # Processing keeps only a raw pointer: hold the instances so they are not garbage-collected mid-run.
    instances: ClassVar[list[OutputPostProcessor]] = []

    def __init__(self, qml_path: str | Path | None, name: str, run: list[OutputPostProcessor]) -> None:
        super().__init__()
        self.qml_path = str(qml_path) if qml_path else None
        self.name = name
        self.run = run  # the post-processors of this run's outputs, the LCZ map first
        self.layer_id: str | None = None

    def postProcessLayer(self, layer: QgsMapLayer, context: QgsProcessingContext,  # noqa: N802 (QGIS API name)
                         feedback: QgsProcessingFeedback) -> None:
        layer.setName(self.name)  # whatever the "prefer file name as layer name" setting made of it
        if self.qml_path:
            message, ok = layer.loadNamedStyle(self.qml_path)
            if not ok:
                feedback.reportError(f"Could not apply the style {self.qml_path}: {message}", False)
        layer.triggerRepaint()
        self.layer_id = layer.id()
        _arrange(context.project() or QgsProject.instance(), [p.layer_id for p in self.run if p.layer_id])

    @classmethod
    def create(cls, qml_path: str | Path | None, name: str, run: list[OutputPostProcessor]) -> OutputPostProcessor:
        instance = cls(qml_path, name, run)
        cls.instances.append(instance)
        return instance


def _arrange(project: QgsProject, layer_ids: list[str]) -> None:
    """The first layer on top of its group with its legend expanded, the others in order right below it.

    Layers load one at a time in Processing's order (by path), so each load arranges those loaded so far.
    """
    root = project.layerTreeRoot()
    nodes = [node for node in map(root.findLayer, layer_ids) if node is not None]
    if not nodes:
        return
    parent = nodes[0].parent()
    for index, node in enumerate(nodes):
        # A layer tree node moves by clone and remove; the clone keeps the layer in the project.
        clone = node.clone()
        parent.insertChildNode(index, clone)
        node.parent().removeChildNode(node)
        if index == 0:
            clone.setExpanded(True)


def style_on_load(context: QgsProcessingContext, outputs: Iterable[tuple[str | None, bool, str]],
                  run_label: str) -> None:
    """Have the outputs that Processing will load (GUI dialog, models) styled, named and placed.

    outputs: [(path or None, styled, title)], the LCZ map first; ``styled``: the engine wrote ``<path>.qml``.
    A layer is named "<title> (<file name>)", or "<title> (<run_label>)" for a temporary file, whose name means
    nothing.
    """
    run: list[OutputPostProcessor] = []
    temporary = Path(QgsProcessingUtils.tempFolder())
    for path, styled, title in outputs:
        if path and context.willLoadLayerOnCompletion(path):
            details = context.layerToLoadOnCompletionDetails(path)
            details.name = f"{title} ({run_label if temporary in Path(path).parents else Path(path).stem})"
            processor = OutputPostProcessor.create(Path(path).with_suffix(".qml") if styled else None,
                                                   details.name, run)
            run.append(processor)
            details.setPostProcessor(processor)
