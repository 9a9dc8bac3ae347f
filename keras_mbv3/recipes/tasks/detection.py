"""``--task detection``: SSDLite on MobileNetV3, COCO mAP (pycocotools)."""

import contextlib
import io

import numpy as np
import tensorflow as tf

from keras_mbv3 import checks
from keras_mbv3.applications import ssdlite
from keras_mbv3.detection import SSDBoxLoss, SSDClassLoss, match
from keras_mbv3.recipes import data as data_lib
from keras_mbv3.recipes import detection_data, overlays
from keras_mbv3.recipes.tasks.base import Task

SHOW_THRESHOLD = 0.3  # mbv3 predict's boxes
SMALL_SIDE = ssdlite.MIN_STRIDES[16][1]  # boxes of a smaller median side: min stride 8 by default (0.2)


class Detection(Task):
    NAME = "detection"
    METRIC = "map"
    MODEL_KIND = "detection model"
    TITLE = " SSDLite"
    CURVE = "loss"
    # Keras: box encodings (A, 4) and class logits (A, classes); .tflite with the post-process: boxes (N, 4),
    # classes (N,), scores (N,) and count ()
    OUTPUT_RANKS = ((2, 2), (2, 1, 1, 0))
    CONSTRUCTORS = {"small": ssdlite.SSDLiteMobileNetV3Small, "large": ssdlite.SSDLiteMobileNetV3Large}
    INPUT_SIZE = ssdlite.INPUT_SIZE
    NEEDS_OVERLAYS = True  # mbv3 predict draws the boxes on each image
    MEDIAPIPE = ("ObjectDetector", "detect",
                 "[(d.categories[0].category_name, d.bounding_box) for d in result.detections]",
                 "max_results=10")  # fmt: skip
    DATA_FORMS = "'digits-det', a COCO-format folder or 'tfds:NAME'"

    OPTIONS = {"min_stride": 16}  # 16: the layout of every run before the option

    def __init__(self, min_stride):
        """``min_stride``: the first map's stride (``ssdlite.MIN_STRIDES``: 16, or 8 for small objects); the model,
        its training targets and its post-process follow it. None (the recipe's default, ``settings.TASK_DEFAULTS``):
        chosen by the training data when they load (``options_by_data``)."""
        self.min_stride = None if min_stride is None else checks.one_of("--min-stride", min_stride,
                                                                        tuple(ssdlite.MIN_STRIDES))  # fmt: skip

    @property
    def stride(self):
        if self.min_stride is None:
            raise ValueError("the detection task's min_stride is chosen by the data: take the task of the loaded data "
                             "(Task.load's Data.task), or give min_stride")  # fmt: skip
        return self.min_stride

    # --- data
    def options_by_data(self, train):
        """``min_stride`` left to the data: 8 where the training boxes' median side (``detection_data.median_box_side``)
        is under ``SMALL_SIDE``, stride 16's smallest anchor, else 16.

        Measured (benchmarks/detection_small_data.py; Small at 96 px, 800 canvases of
        160 px, 3,003 steps): digits of 6-20% of the side (median 0.10) reach int8
        mAP@.5 0.650 at stride 8 against 0.534 at 16, and against 0.659 at 128 px and
        stride 16 for 1.28x stride 8's int8 time; digits of 15-45% (median 0.24)
        reach 0.918 at stride 8 against 0.857, where 128 px at stride 16 gives 0.934 for
        1.28x the time: there the larger input is the better spend.
        """
        if self.min_stride is not None:
            return {}, ""
        side = detection_data.median_box_side(train)
        stride = 8 if side is not None and side < SMALL_SIDE else 16
        seen = "no boxes in the training sample" if side is None else (
            f"the training boxes' median side, {side:.2f} of the image's, is {'' if stride == 8 else 'not '}under "
            f"{SMALL_SIDE}, stride 16's smallest anchor")
        other = {8: "--min-stride 16 for the faster model", 16: "--min-stride 8 for small objects"}[stride]
        return {"min_stride": stride}, f"min stride {stride}, chosen by the data: {seen} ({other})"

    def embedded(self, image_size, seed):
        train, val = detection_data.digits_detection(image_size, seed=seed)
        labels = ("background", *data_lib.DIGIT_NAMES)
        return detection_data.from_arrays(*train), detection_data.from_arrays(*val), labels

    def tfds(self, name, data_dir, image_size):
        return detection_data.tfds_detection(name, data_dir, image_size)

    def folder(self, path, image_size):
        return detection_data.coco_folder(path, image_size)

    def augment(self, image, truth, seed):
        """Scale jitter: a zoom-out of half the images (objects up to 2x smaller, never below 0.1 of the side), then
        a random crop (up to 1.67x larger); a horizontal flip for sets whose objects may be mirrored
        (``detection_data.MIRRORABLE`` in their truth; not digits)."""
        zoom_seed, crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3))
        image, moved = detection_data.random_zoom_out(image, truth, zoom_seed)
        image, moved = detection_data.random_crop(image, moved, crop_seed)
        if detection_data.MIRRORABLE in truth:
            image, moved = detection_data.horizontal_flip(image, moved, flip_seed)
            moved[detection_data.MIRRORABLE] = truth[detection_data.MIRRORABLE]
        return image, moved

    def target(self, truth, classes, image_shape):
        """The anchors' targets of ``match``, once per output (both losses read them)."""
        targets = match(truth["boxes"], truth["labels"], ssdlite.size_anchors(tuple(image_shape[:2]), self.stride))
        return targets, targets

    def truth(self, label, classes):
        """The boxes and labels as they are (the evaluator matches detections to them)."""
        return label

    # --- model and evaluation
    def build_model(self, size, minimalistic, classes, input_shape, alpha, bn_momentum, weights):
        """SSDLite; ``weights`` (``"imagenet"`` or a weights file) initializes the backbone.

        With weights the backbone keeps its full tail (torchvision's rule: the
        reduced tail halves the last stage's widths, which no classifier's weights have).
        """
        return self.CONSTRUCTORS[size](classes, input_shape=input_shape, alpha=alpha, minimalistic=minimalistic,
                                       backbone_weights=weights, reduced_tail=weights is None,
                                       bn_momentum=bn_momentum, min_stride=self.stride)  # fmt: skip

    def loss(self):
        return [SSDBoxLoss(), SSDClassLoss()]

    def expected_outputs(self, classes, image_shape):
        count = len(ssdlite.size_anchors(tuple(image_shape[:2]), self.stride))
        return [((count, 4), (count, classes)), ((None, 4), (None,), (None,), ())]

    def options_of_model(self, input_shape, output_shapes):
        """``{"min_stride": ...}`` of a Keras model's outputs, which its anchor rows tell (``ssdlite.stride_of``);
        nothing for the ``.tflite`` form (its post-process holds the anchors) or a size not fixed."""
        size = tuple(input_shape[:2])
        stride = ssdlite.stride_of(size, output_shapes[0][0]) if len(output_shapes) == 2 and None not in size else None
        return {} if stride is None else {"min_stride": stride}

    def evaluator(self, classes, image_shape):
        return MapEvaluator(classes, image_shape)

    def export_options(self, image_shape):
        """SSDLite's TFLite post-process, with the evaluation's thresholds (the ``.tflite`` files' mAP is the
        report's)."""
        return {"postprocess": ssdlite.postprocess(image_shape[:2], min_stride=self.stride)}

    def metadata_labels(self, labels):
        """The detected classes' names, as the post-process numbers them (the background left out)."""
        return labels[1:]

    # --- presentation
    def describe_model(self, output_shapes):
        if len(output_shapes) == 2:
            rows = output_shapes[0][0]
            return f"{self.MODEL_KIND} of {output_shapes[1][-1]} classes" + (f" and {rows:,} anchors" if rows else "")
        return f"{self.MODEL_KIND} with the TFLite post-process"

    def class_names(self, output_shapes):
        """Names for a file without metadata: the class indices (0-based, the background left out)."""
        return tuple(str(i) for i in range(output_shapes[1][-1] - 1)) if len(output_shapes) == 2 else ()

    def predict(self, path, image, output, names, options):
        """``{"image", "overlay", "objects": [{"class", "name", "score", "box"}]}``: the ``options["top_k"]`` best
        detections of score >= 0.3, boxes ``[ymin, xmin, ymax, xmax]`` in pixels, drawn on the overlay PNG."""
        found = detections([o[None] for o in output], image.shape, SHOW_THRESHOLD, options["top_k"])
        count = int(found["count"][0])
        shown = [i for i in range(count) if found["scores"][0][i] >= SHOW_THRESHOLD][: options["top_k"]]  # best first
        boxes = found["boxes"][0][shown]
        height, width = image.shape[:2]
        objects = [{"class": int(c), "name": names[c] if c < len(names) else str(c), "score": round(float(s), 4),
                    "box": [round(float(v), 1) for v in b * [height, width, height, width]]}
                   for b, c, s in zip(boxes, found["classes"][0][shown], found["scores"][0][shown])]  # fmt: skip
        target = overlays.write(overlays.boxes_png(image, boxes), path, options["overlays"], options["overwrite"])
        return {"image": path, "overlay": target, "objects": objects}

    def describe(self, result):
        found = ", ".join(f"{o['name']} {o['score']:.2f}" for o in result["objects"]) or "nothing found"
        return f"{result['image']}: {found} -> {result['overlay']}"


def detections(outputs, image_shape, score_threshold=ssdlite.SCORE_THRESHOLD,
               max_detections=ssdlite.MAX_DETECTIONS):  # fmt: skip
    """``{boxes, classes, scores, count}`` (numpy, batched) of a model's outputs in either form.

    Keras outputs (box encodings, class logits) are decoded with per-class NMS
    (``ssdlite.decode``, with the anchors their rows tell: either ``min_stride``); a ``.tflite`` with the
    post-process gives them as they are.
    """
    if len(outputs) == 4:
        boxes, classes, scores, count = outputs
        return {"boxes": boxes, "classes": classes.astype(int), "scores": scores, "count": count.astype(int)}
    found = ssdlite.decode(outputs[0], outputs[1], image_shape[:2], score_threshold=score_threshold,
                           max_detections=max_detections)
    return {name: np.asarray(value) for name, value in found.items()}


class MapEvaluator:
    """COCO mAP@[.5:.95] and mAP@.5 (pycocotools) of the batches given to ``update``."""

    def __init__(self, classes, image_shape):
        self.classes, self.image_shape = classes, image_shape
        self.images, self.truth, self.found = 0, [], []

    def update(self, outputs, truth):
        found = detections(outputs, self.image_shape)
        height, width = self.image_shape[:2]
        scale = np.array([height, width, height, width], np.float32)
        for i in range(len(truth["labels"])):
            image_id = self.images + i
            for box, label in zip(truth["boxes"][i], truth["labels"][i]):
                if label > 0:
                    self.truth.append((image_id, box * scale, int(label)))
            n = int(found["count"][i])
            for box, label, score in zip(found["boxes"][i][:n], found["classes"][i][:n], found["scores"][i][:n]):
                self.found.append((image_id, box * scale, int(label) + 1, float(score)))
        self.images += len(truth["labels"])

    def result(self):
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        def xywh(box):
            ymin, xmin, ymax, xmax = (float(v) for v in box)
            return [xmin, ymin, xmax - xmin, ymax - ymin]

        height, width = self.image_shape[:2]
        truth = COCO()
        truth.dataset = {
            "images": [{"id": i, "height": height, "width": width} for i in range(self.images)],
            "annotations": [{"id": k, "image_id": i, "category_id": label, "bbox": xywh(box), "iscrowd": 0,
                             "area": xywh(box)[2] * xywh(box)[3]} for k, (i, box, label) in enumerate(self.truth, 1)],
            "categories": [{"id": c} for c in range(1, self.classes)],
        }  # fmt: skip
        if not self.truth or not self.found:  # loadRes fails on no detections
            return {Detection.METRIC: 0.0, "map50": 0.0}
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and table
            truth.createIndex()
            rows = np.array([[i, *xywh(box), score, label] for i, box, label, score in self.found], np.float64)
            evaluation = COCOeval(truth, truth.loadRes(rows), "bbox")
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        return {Detection.METRIC: float(evaluation.stats[0]), "map50": float(evaluation.stats[1])}
