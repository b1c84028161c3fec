"""Style LCZ outputs when the Toolbox or a model loads them (Processing loads outputs without their .qml)."""

from qgis.core import QgsProcessingLayerPostProcessorInterface


class LCZStylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Applies the LCZ ``.qml`` sidecar to the loaded layer; runs on the main thread after it is added."""

    # Processing keeps only a raw pointer: hold the instances so they are not garbage-collected mid-run.
    instances = []

    def __init__(self, qml_path):
        super().__init__()
        self.qml_path = str(qml_path)

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API name)
        message, ok = layer.loadNamedStyle(self.qml_path)
        if not ok:
            feedback.reportError(f"Could not apply the LCZ style {self.qml_path}: {message}", False)
        layer.triggerRepaint()

    @classmethod
    def create(cls, qml_path):
        instance = cls(qml_path)
        cls.instances.append(instance)
        return instance


def style_on_load(context, output, qml_path, name):
    """Attach the LCZ style post-processor to ``output`` if Processing will load it (GUI dialog, models)."""
    if context.willLoadLayerOnCompletion(output):
        details = context.layerToLoadOnCompletionDetails(output)
        details.name = name
        details.setPostProcessor(LCZStylePostProcessor.create(qml_path))
