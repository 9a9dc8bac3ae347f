"""Detection exports: SSDLite through QAT on the Keras line in use, int8 with TFLite_Detection_PostProcess."""

import numpy as np
import pytest

from conftest import outputs
from keras_mbv3.applications.ssdlite import anchors
from keras_mbv3.detection import decode_detections
from keras_mbv3.quantization import DetectionPostProcess, export_tflite
from keras_mbv3.quantization.litert import graph_report, interpreter
from keras_mbv3.quantization.postprocess import CUSTOM_OP, OUTPUT_NAMES

pytestmark = pytest.mark.slow  # converts whole models: `make test`, not `make check`


@pytest.fixture
def detector(ssdlite_detector):
    """A 4-class SSDLite at 64 px (3 objects + background) with real BN statistics, its QAT model and 8 images."""
    return ssdlite_detector


def postprocess(model, **options):
    return DetectionPostProcess(anchors(model), **{"score_threshold": 0.3, "max_detections": 10, **options})


def detect(content, images):
    """``{name: (N, ...)}`` of a post-processed export's outputs, in the signature's names."""
    runner = interpreter(content).get_signature_runner()
    found = [runner(**{next(iter(runner.get_input_details())): image[None]}) for image in images]
    return {name: np.concatenate([f[name] for f in found]) for name in OUTPUT_NAMES}


def detect_and_decode(content, model, qat, images):
    """``(found, expected)``: the shipped file's detections on ``images`` and ``decode_detections`` of the values its
    post-process read in the same runs (the box encodings, and the logits before the SOFTMAX), read from one
    interpreter that keeps every tensor (reference kernels: XNNPACK's partition would hide them; the post-process
    runs outside it anyway). Those values are checked against ``qat``'s own outputs first, so that heads wired the
    wrong way round (both (N, 4) with 4 classes) are caught.

    One conversion: a second export without the post-process, for the network's own outputs, took 4 s on Keras 3
    and 8 s on tf_keras per test."""
    runner = interpreter(content, xnnpack=False, keep_tensors=True)
    ops = runner._get_ops_details()
    (post,) = [op for op in ops if op["op_name"] == CUSTOM_OP]
    (softmax,) = [op for op in ops if list(op["outputs"]) == [post["inputs"][1]]]
    assert softmax["op_name"] == "SOFTMAX"
    signature = runner.get_signature_runner()
    found, boxes, logits = [], [], []
    for image in images:
        found.append(signature(**{next(iter(signature.get_input_details())): image[None]}))
        boxes.append(runner.get_tensor(post["inputs"][0])[0])
        logits.append(runner.get_tensor(softmax["inputs"][0])[0])
    found = {name: np.concatenate([f[name] for f in found]) for name in OUTPUT_NAMES}
    # untrained random detectors: int8 and fake-quant outputs correlate at 0.79-0.91 (their values drift apart by
    # 6-10% of the range on average), a box head read as the class head at -0.10 to 0.07
    for read, wanted in zip((boxes, logits), outputs(qat, images)):
        assert np.corrcoef(np.stack(read).ravel(), wanted.ravel())[0, 1] > 0.5
    return found, decode_detections(np.stack(boxes), np.stack(logits), anchors(model), score_threshold=0.3,
                                    max_detections=10)  # fmt: skip


def same_detections(found, expected):
    np.testing.assert_array_equal(found["num_detections"].astype(int), np.asarray(expected["count"]))
    for i, count in enumerate(np.asarray(expected["count"])):
        np.testing.assert_array_equal(found["detection_classes"][i, :count], np.asarray(expected["classes"])[i, :count])
        np.testing.assert_allclose(found["detection_boxes"][i, :count], np.asarray(expected["boxes"])[i, :count],
                                   atol=1e-5)  # fmt: skip
        np.testing.assert_allclose(found["detection_scores"][i, :count], np.asarray(expected["scores"])[i, :count],
                                   atol=1e-5)  # fmt: skip


def test_the_concat_tree_keeps_xnnpacks_input_limit(detector):
    model, _, _ = detector
    concats = [layer for layer in model.layers if type(layer).__name__ == "Concatenate"]
    assert len(concats) == 4 and all(len(layer.input) <= 5 for layer in concats)


def test_float_export_ends_in_the_post_process_and_equals_our_decode(detector):
    model, _, images = detector
    content = export_tflite(model, quantization="float32", postprocess=postprocess(model))
    report = graph_report(content)
    assert report["partitions"] == 1 and report["undelegated"] == {CUSTOM_OP: 1}
    found = detect(content, images[:4])
    assert found["detection_boxes"].shape == (4, 10, 4) and found["num_detections"].shape == (4,)
    boxes, logits = model.predict(images[:4], verbose=0)
    same_detections(found, decode_detections(boxes, logits, anchors(model), score_threshold=0.3, max_detections=10))


def test_int8_export_is_one_partition_and_its_post_process_equals_our_decode(detector):
    """The QAT int8 network is one XNNPACK partition; only the post-process runs outside, in float after a
    DEQUANTIZE, and it gives ``decode_detections`` of the same int8 network's outputs."""
    model, qat, images = detector
    content = export_tflite(qat, quantization="int8", input_type="float32", postprocess=postprocess(model),
                            strip_names=True)  # fmt: skip
    report = graph_report(content)
    assert report["partitions"] == 1 and report["undelegated"] == {CUSTOM_OP: 1}
    assert report["ops"]["QUANTIZE"] == 1  # the float input's: every head shares its concat's scale
    same_detections(*detect_and_decode(content, model, qat, images[:4]))


def test_detections_per_class_reaches_the_op(detector):
    """The converter drops this option (the kernel then keeps 100 per class); the export writes it back."""
    model, _, images = detector
    options = dict(score_threshold=0.0, max_detections=10, detections_per_class=2)
    found = detect(export_tflite(model, quantization="float32", postprocess=postprocess(model, **options)), images[:2])
    for classes, count in zip(found["detection_classes"], found["num_detections"].astype(int)):
        assert count == 6 and np.bincount(classes[:count].astype(int), minlength=3).max() == 2  # 3 classes x 2


def test_post_training_int8_with_the_post_process_is_one_partition(detector):
    model, _, images = detector
    content = export_tflite(model, quantization="int8", representative_dataset=images, input_type="float32",
                            postprocess=postprocess(model))  # fmt: skip
    report = graph_report(content)
    assert report["partitions"] == 1 and report["undelegated"] == {CUSTOM_OP: 1}


def test_a_stride_8_detector_is_one_int8_partition_with_the_post_process(detector):
    """The seventh map (C3, ``min_stride=8``) keeps the int8 network one XNNPACK partition, and the post-process
    reads its anchors (``anchors(model)`` tells the layout by the anchor count).

    ``quantize_model(model, representative_dataset=images)`` is also what post-training int8 of the float model
    exports (``converter.post_training_model``), so this covers both; the post-training route itself, with the
    post-process, is tested on the stride-16 detector above (exporting it here too: 17.9 s against 11.8 s on Keras 3,
    36.2 s against 19.4 s on tf_keras, for the same model)."""
    from keras_mbv3.applications.ssdlite import SSDLiteMobileNetV3Small
    from keras_mbv3.batchnorm import precise_batchnorm
    from keras_mbv3.quantization import quantize_model

    _, _, images = detector
    model = SSDLiteMobileNetV3Small(4, input_shape=(64, 64, 3), bn_momentum=0.9, min_stride=8)
    precise_batchnorm(model, images)
    qat = quantize_model(model, representative_dataset=images)
    shipped = export_tflite(qat, quantization="int8", input_type="float32", postprocess=postprocess(model))
    report = graph_report(shipped)
    assert report["partitions"] == 1 and report["undelegated"] == {CUSTOM_OP: 1}
    same_detections(*detect_and_decode(shipped, model, qat, images[:2]))


@pytest.mark.parametrize("arguments, name", [
    (dict(anchors=np.zeros((5, 3))), "anchors"),
    (dict(score_threshold=1.0), "score_threshold"),
    (dict(max_detections=0), "max_detections"),
    (dict(scores="relu"), "scores"),
])  # fmt: skip
def test_bad_post_process_arguments_name_themselves(arguments, name):
    with pytest.raises(ValueError, match=name):
        DetectionPostProcess(**{"anchors": np.zeros((8, 4)), **arguments})


def test_anchors_of_another_model_are_refused(detector):
    model, _, _ = detector
    with pytest.raises(ValueError, match="postprocess"):
        export_tflite(model, quantization="float32", postprocess=DetectionPostProcess(np.zeros((8, 4))))
