"""TFLite_Detection_PostProcess at the end of a detection model's export, as TFLite detection apps expect it.

The TF Object Detection API attaches the op the same way: a ``tf.function`` with
``experimental_implements`` that the converter replaces by the custom op, which
LiteRT's builtin resolver runs (XNNPACK does not take it; it runs after the
delegated network). Measured on SSDLite (ai-edge-litert 2.3.0): the converter
drops ``detections_per_class`` from the op's options (the kernel then keeps 100
per class), orders the subgraph's outputs as it likes, and quantizes the softmax
in int8, which XNNPACK does not take (two partitions); ``finish_detection``
mends all three in the flatbuffer pass, so that the int8 network is one partition.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from keras_mbv3 import checks

CUSTOM_OP = "TFLite_Detection_PostProcess"
OUTPUT_NAMES = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")  # the op's ports
SCORES = ("softmax", "sigmoid")
# Float ops an int8 detection export has after its last DEQUANTIZE (check_int8_graph)
FLOAT_TAIL = frozenset({CUSTOM_OP, "SOFTMAX", "LOGISTIC"})


@dataclasses.dataclass(frozen=True, eq=False)
class DetectionPostProcess:
    """Box decoding and per-class NMS on the device (TFLite_Detection_PostProcess with ``use_regular_nms``).

    For a model with outputs ``[box_encodings (1, N, 4), class_logits (1, N, C)]``
    (class 0 the background; encodings (ty, tx, th, tw) with ``scales``), the
    export's outputs become ``detection_boxes`` (1, max_detections, 4) normalized
    ``(ymin, xmin, ymax, xmax)``, ``detection_classes`` (0-based, the background
    left out), ``detection_scores`` and ``num_detections``, all float32: the same
    detections as ``keras_mbv3.detection.decode_detections`` with these arguments.

    Args:
        anchors: ``(N, 4)`` (ycenter, xcenter, height, width), normalized.
        score_threshold: minimum class score, in [0, 1).
        iou_threshold: NMS IoU, in (0, 1].
        max_detections: detections per image.
        detections_per_class: detections per class before the final selection.
        scores: ``"softmax"`` (of the logits, as ``SSDClassLoss`` trains them) or ``"sigmoid"``.
        scales: the box coder's (y, x, h, w) scales.
    """

    anchors: np.ndarray
    score_threshold: float = 0.01
    iou_threshold: float = 0.55
    max_detections: int = 100
    detections_per_class: int = 100
    scores: str = "softmax"
    scales: tuple = (10.0, 10.0, 5.0, 5.0)

    def __post_init__(self):
        anchors = np.asarray(self.anchors, np.float32)
        if anchors.ndim != 2 or anchors.shape[-1] != 4 or not len(anchors):
            checks.fail("anchors", getattr(self.anchors, "shape", self.anchors), "an array (N, 4) of anchors")
        object.__setattr__(self, "anchors", anchors)
        checks.in_range("score_threshold", self.score_threshold, 0, 1, low_open=False, high_open=True)
        checks.in_range("iou_threshold", self.iou_threshold, 0, 1, low_open=True, high_open=False)
        checks.positive_int("max_detections", self.max_detections)
        checks.positive_int("detections_per_class", self.detections_per_class)
        checks.one_of("scores", self.scores, SCORES)
        checks.positive_numbers("scales", self.scales, length=4)

    def _attributes(self, num_classes):
        y, x, h, w = (float(s) for s in self.scales)
        return dict(max_detections=self.max_detections, max_classes_per_detection=1,
                    detections_per_class=self.detections_per_class, use_regular_nms=True,
                    nms_score_threshold=float(self.score_threshold), nms_iou_threshold=float(self.iou_threshold),
                    num_classes=num_classes - 1, y_scale=y, x_scale=x, h_scale=h, w_scale=w)  # fmt: skip

    def wrap(self, frozen, specs):
        """The concrete function ``image -> (boxes, classes, scores, count)`` around the frozen Keras model."""
        shapes = [tuple(t.shape) for t in tf.nest.flatten(frozen.structured_outputs)]
        if len(shapes) != 2:
            checks.fail("postprocess", f"{len(self.anchors)} anchors", "a model with the outputs [box_encodings "
                        f"(1, N, 4), class_logits (1, N, classes)]; this one has {len(shapes)} outputs {shapes}")  # fmt: skip
        box_shape, logit_shape = shapes
        if box_shape[1:] != (len(self.anchors), 4) or logit_shape[1] != len(self.anchors):
            checks.fail("postprocess", f"{len(self.anchors)} anchors", f"the model's {box_shape[1]} anchors (outputs "
                        f"{box_shape} and {logit_shape})")  # fmt: skip
        anchors = tf.constant(self.anchors)
        score = tf.nn.softmax if self.scores == "softmax" else tf.sigmoid

        # A placeholder body: the converter replaces the function by the custom op.
        @tf.function(experimental_implements=_implements(self._attributes(int(logit_shape[-1]))))
        def post_process(box_encodings, class_predictions, anchors):
            return tuple(tf.constant(0.0, name=name) for name in OUTPUT_NAMES)

        @tf.function(input_signature=specs)
        def serve(image):
            box_encodings, logits = frozen(image)
            return post_process(box_encodings, score(logits), anchors)

        return serve.get_concrete_function()


def _implements(attributes):
    parts = [f'name: "{CUSTOM_OP}"']
    for key, value in attributes.items():
        kind, text = (("b", str(value).lower()) if isinstance(value, bool) else ("i", str(value)) if isinstance(value, int)
                      else ("f", repr(float(value))))  # fmt: skip
        parts.append(f'attr {{ key: "{key}" value {{ {kind}: {text} }} }}')
    return " ".join(parts)


def _op_name(model, op):
    from tensorflow.lite.python import schema_py_generated as schema

    code = model.operatorCodes[op.opcodeIndex]
    if code.customCode:
        return code.customCode.decode()
    value = max(code.builtinCode, code.deprecatedBuiltinCode)
    return next(k for k, v in vars(schema.BuiltinOperator).items() if v == value)


def finish_detection(model, postprocess):
    """In the flatbuffer object ``model``: the subgraph's outputs in the op's port order, ``detections_per_class``
    in the op's options, and an int8 ``SOFTMAX -> DEQUANTIZE`` turned into ``DEQUANTIZE -> float SOFTMAX``
    (exact: the softmax of the int8 logits, no int8 rounding of the scores). Returns the output names."""
    from flatbuffers import flexbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    (subgraph,) = model.subgraphs
    ops = subgraph.operators
    (custom,) = [op for op in ops if _op_name(model, op) == CUSTOM_OP]
    options = flexbuffers.Loads(bytes(custom.customOptions))
    options["detections_per_class"] = int(postprocess.detections_per_class)
    custom.customOptions = list(flexbuffers.Dumps(options))
    subgraph.outputs = list(custom.outputs)
    for i, op in enumerate(ops):
        if _op_name(model, op) != "SOFTMAX" or subgraph.tensors[op.outputs[0]].type == schema.TensorType.FLOAT32:
            continue
        (quantized,) = op.outputs
        j = next(k for k, other in enumerate(ops)
                 if _op_name(model, other) == "DEQUANTIZE" and list(other.inputs) == [quantized])  # fmt: skip
        dequantize = ops[j]
        dequantize.inputs, dequantize.outputs, op.inputs, op.outputs = op.inputs, [quantized], [quantized], dequantize.outputs
        subgraph.tensors[quantized].type, subgraph.tensors[quantized].quantization = schema.TensorType.FLOAT32, None
        ops[i], ops[j] = dequantize, op
    return list(OUTPUT_NAMES)
