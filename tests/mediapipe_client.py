"""MediaPipe Tasks as the on-device client of our .tflite files (in the Keras 3 environment only: mediapipe needs
absl-py 2.3, tfmot 1.2)."""

import numpy as np
import pytest

try:
    import mediapipe
    from mediapipe.tasks.python import BaseOptions, vision
except ImportError:
    mediapipe = None

needs_mediapipe = pytest.mark.skipif(mediapipe is None, reason="mediapipe is in the Keras 3 environment only")


def image(pixels):
    """A MediaPipe RGB image of ``pixels`` (H, W, 3) in [0, 255]."""
    return mediapipe.Image(image_format=mediapipe.ImageFormat.SRGB, data=np.ascontiguousarray(pixels.astype(np.uint8)))


def classify(path, images, max_results=3):
    """``[[(index, name, score), ...] per image]`` from MediaPipe's ImageClassifier."""
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=max_results)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        return [[(c.index, c.category_name, c.score) for c in classifier.classify(image(x)).classifications[0].categories]
                for x in images]  # fmt: skip


def segment(path, images):
    """``(labels, category masks (N, H, W))`` from MediaPipe's ImageSegmenter."""
    options = vision.ImageSegmenterOptions(base_options=BaseOptions(model_asset_path=str(path)), output_category_mask=True)
    with vision.ImageSegmenter.create_from_options(options) as segmenter:
        # copies: a mask's numpy view dies with its result
        masks = [np.array(segmenter.segment(image(x)).category_mask.numpy_view()) for x in images]
        return tuple(segmenter.labels), np.squeeze(np.stack(masks), -1)


def detect(path, images, score_threshold=0.0, max_results=-1):
    """``[[(category_name, score, (x, y, width, height) in pixels), ...] per image]`` from MediaPipe's ObjectDetector
    (by default all the model gives), one entry per category of a detection: MediaPipe joins the detections of one
    box under several classes (a per-class NMS keeps such) into one detection of several categories."""
    options = vision.ObjectDetectorOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                           score_threshold=score_threshold, max_results=max_results)  # fmt: skip
    with vision.ObjectDetector.create_from_options(options) as detector:
        found = [detector.detect(image(x)).detections for x in images]
    return [[(c.category_name, c.score, (d.bounding_box.origin_x, d.bounding_box.origin_y, d.bounding_box.width,
                                         d.bounding_box.height)) for d in detections for c in d.categories]
            for detections in found]  # fmt: skip
