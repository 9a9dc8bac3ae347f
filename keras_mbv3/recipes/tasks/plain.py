"""The hooks of tasks whose ``.tflite`` files need nothing beyond the network (classification, segmentation)."""


def export_options(image_shape):
    """More ``export_tflite`` arguments for the run's ``.tflite`` files: none."""
    return {}


def metadata_labels(labels):
    """The class names written into the exports' metadata: all of them, in index order."""
    return labels
