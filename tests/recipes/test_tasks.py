"""The tasks in-process, without a model: evaluators, predict results and overlays, shapes and names."""

import os

import numpy as np
import pytest
import tensorflow as tf

from keras_mbv3.applications import ssdlite
from keras_mbv3.recipes.tasks.detection import detections
from keras_mbv3.recipes import data as data_lib
from keras_mbv3.recipes import tasks
from keras_mbv3.recipes.tasks.base import Task
from keras_mbv3.recipes.tasks.segmentation import mean_iou


def test_every_task_is_a_task_named_by_its_flag_whose_ranks_tell_it():
    for name in tasks.NAMES:
        task = tasks.get(name)
        assert isinstance(task, Task) and task.NAME == name and tasks.get(name) is task
        made = tasks.get(name, **task.OPTIONS)  # with the options the data would choose (detection's min_stride)
        for form in made.expected_outputs(3, (64, 64, 3)):
            assert tasks.of_outputs(form) == name
    assert tasks.of_outputs(((2, 2, 2, 2),)) is None


def test_mean_iou_counts_classes_present_in_labels_or_predictions():
    # rows: truth, columns: predicted. Class 0: 3 right, 1 taken for 1; class 1: 2 right; class 2 absent.
    confusion = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    assert mean_iou(confusion) == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert mean_iou(np.diag([5, 0, 7])) == 1.0


def test_the_segmentation_evaluator_is_mean_iou_of_the_argmax():
    truth = np.array([[[0, 1], [1, 2]]])
    logits = np.eye(3)[np.array([[[0, 1], [2, 2]]])]  # one pixel of class 1 taken for 2
    evaluator = tasks.get("segmentation").evaluator(3, (2, 2, 3))
    evaluator.update(logits, truth)
    assert evaluator.result() == {"miou": pytest.approx((1 + 1 / 2 + 1 / 2) / 3)}


def test_the_classification_evaluator_is_top_1_accuracy_over_batches():
    evaluator = tasks.get("classification").evaluator(3, (32, 32, 3))
    evaluator.update(np.array([[0.1, 0.8, 0.1], [0.6, 0.3, 0.1]]), np.eye(3)[[1, 2]])
    evaluator.update(np.array([[0.2, 0.2, 0.6]]), np.eye(3)[[2]])
    assert evaluator.result() == {"accuracy": pytest.approx(2 / 3)}


def map_of(found, truth_boxes, truth_labels):
    """The detection evaluator's figures for post-processed outputs ``found`` = [(box, class, score)] per image."""
    most = max(len(image) for image in found)
    boxes, classes, scores = np.zeros((len(found), most, 4)), np.zeros((len(found), most)), np.zeros((len(found), most))
    for i, image in enumerate(found):
        for j, (box, label, score) in enumerate(image):
            boxes[i, j], classes[i, j], scores[i, j] = box, label, score
    evaluator = tasks.get("detection").evaluator(3, (100, 100, 3))
    evaluator.update((boxes, classes, scores, np.array([len(image) for image in found])),
                     {"boxes": np.array(truth_boxes), "labels": np.array(truth_labels)})  # fmt: skip
    return evaluator.result()


def test_the_detection_evaluator_is_cocos_map_on_hand_made_boxes():
    """Two images of 100 px, one object each (classes 1 and 2; 0 is the background, and the post-process numbers
    the classes from 0 without it); the second row of truth is padding."""
    truth_boxes = [[[0.1, 0.1, 0.5, 0.5], [0, 0, 0, 0]], [[0.0, 0.0, 0.5, 0.5], [0, 0, 0, 0]]]
    truth_labels = [[1, 0], [2, 0]]
    exact = [[([0.1, 0.1, 0.5, 0.5], 0, 0.9)], [([0.0, 0.0, 0.5, 0.5], 1, 0.8)]]
    assert map_of(exact, truth_boxes, truth_labels) == pytest.approx({"map": 1.0, "map50": 1.0})
    wrong_class = [exact[0], [([0.0, 0.0, 0.5, 0.5], 0, 0.8)]]  # class 2 never found; a false class 1
    assert map_of(wrong_class, truth_boxes, truth_labels)["map50"] == pytest.approx(0.5)
    # IoU 1450 / 2500 = 0.58: a match at the thresholds .50 and .55 of COCO's ten, .50 to .95
    loose = [exact[0], [([0.0, 0.0, 0.5, 0.29], 1, 0.8)]]
    assert map_of(loose, truth_boxes, truth_labels) == pytest.approx({"map": (1 + 2 / 10) / 2, "map50": 1.0})
    assert map_of([[], []], truth_boxes, truth_labels) == {"map": 0.0, "map50": 0.0}


def test_classification_predict_gives_the_top_k_best_first():
    task = tasks.get("classification")
    result = task.predict("a.png", None, np.array([0.1, 0.6, 0.3]), ("x", "y", "z"), {"top_k": 2})
    assert result == {"image": "a.png", "top": [{"class": 1, "name": "y", "score": 0.6},
                                                 {"class": 2, "name": "z", "score": 0.3}]}  # fmt: skip
    assert task.describe(result) == "a.png: y 0.600, z 0.300"
    assert task.class_names(((3,),)) == ("0", "1", "2") and task.describe_model(((3,),)) == "classifier of 3 classes"


def test_segmentation_predict_writes_an_overlay_and_keeps_a_users_file(tmp_path):
    task = tasks.get("segmentation")
    image = np.full((4, 4, 3), 100.0, np.float32)
    output = np.zeros((4, 4, 3), np.float32)
    output[..., 0] = 1
    output[:2, :2, 2] = 5  # a quarter of class 2
    options = {"overlays": str(tmp_path / "out"), "overwrite": False, "top_k": 5}
    result = task.predict("dir/b.png", image, output, ("bg", "one", "two"), options)
    assert result["classes"] == {"bg": 0.75, "two": 0.25}
    painted = tf.io.decode_png(open(result["overlay"], "rb").read()).numpy()
    assert result["overlay"] == os.path.join(options["overlays"], "b.overlay.png")
    assert (painted[2:, 2:] == 100).all() and not (painted[:2, :2] == 100).all()  # class 0 left clear
    with pytest.raises(FileExistsError):
        task.predict("dir/b.png", image, output, ("bg", "one", "two"), options)


def test_detection_predict_keeps_boxes_over_the_show_threshold_in_pixels(tmp_path):
    task = tasks.get("detection")  # min_stride left to the data: predict reads the outputs' rows
    image = np.zeros((64, 64, 3), np.float32)
    output = (np.array([[0.25, 0.25, 0.75, 0.5], [0.0, 0.0, 0.1, 0.1]], np.float32), np.array([1.0, 0.0]),
              np.array([0.9, 0.1], np.float32), np.array(2.0))  # the .tflite form: boxes, classes, scores, count
    result = task.predict("c.jpg", image, output, ("cat", "dog"), {"overlays": str(tmp_path), "overwrite": False,
                                                                  "top_k": 5})  # fmt: skip
    assert result["objects"] == [{"class": 1, "name": "dog", "score": 0.9, "box": [16.0, 16.0, 48.0, 32.0]}]
    drawn = tf.io.decode_png(open(result["overlay"], "rb").read()).numpy()
    red = np.argwhere(drawn[..., 0] > 200)
    np.testing.assert_array_equal([red.min(0), red.max(0)], [[15, 15], [47, 31]])  # the box's outline, (H - 1) * y
    assert drawn[30, 20].max() == 0 and (drawn[..., 1:] < 60).all()  # inside left clear; red only
    assert task.describe(result).startswith("c.jpg: dog 0.90 -> ")
    assert task.metadata_labels(("background", "cat", "dog")) == ("cat", "dog")


def test_detection_export_options_are_ssdlites_post_process_at_the_evaluation_thresholds():
    post = tasks.get("detection", min_stride=16).export_options((64, 64, 3))["postprocess"]
    np.testing.assert_array_equal(post.anchors, ssdlite.size_anchors((64, 64), 16))
    assert (post.score_threshold, post.max_detections) == (ssdlite.SCORE_THRESHOLD, ssdlite.MAX_DETECTIONS)


def test_detections_min_stride_sets_its_model_targets_outputs_and_post_process_and_raw_outputs_tell_theirs():
    """``--min-stride 8``: seven maps, the first C3; everything that reads anchors follows (issue 24)."""
    shape = (64, 64, 3)
    rows = {stride: len(ssdlite.size_anchors(shape[:2], stride)) for stride in (16, 8)}
    assert rows == {16: 144, 8: 528}  # maps of 4, 2, 1, 1, 1, 1 locations a side (8 first), 6 anchors each
    truth = {"boxes": tf.constant([[0.4, 0.4, 0.5, 0.5]]), "labels": tf.constant([2])}
    for stride in (16, 8):
        task = tasks.get("detection", min_stride=stride)
        targets, _ = task.target(truth, 3, shape)
        assert targets.shape == (rows[stride], 5) and int(tf.reduce_sum(tf.cast(targets[:, 4] == 2, tf.int32))) >= 1
        assert task.expected_outputs(3, shape)[0] == ((rows[stride], 4), (rows[stride], 3))
        post = task.export_options(shape)["postprocess"]
        np.testing.assert_array_equal(post.anchors, ssdlite.size_anchors(shape[:2], stride))
        logits = np.full((1, rows[stride], 3), -9.0, np.float32)
        logits[0, 5, 1] = 9.0  # anchor 5, class 1 (the first after the background)
        found = detections([np.zeros((1, rows[stride], 4), np.float32), logits], shape)
        anchor = ssdlite.size_anchors(shape[:2], stride)[5]  # decoded with the anchors of the rows' stride
        np.testing.assert_allclose(found["boxes"][0, 0], [*(anchor[:2] - anchor[2:] / 2), *(anchor[:2] + anchor[2:] / 2)],
                                   atol=1e-6)  # fmt: skip
    model = tasks.get("detection", min_stride=8).build_model("small", False, 3, shape, 1.0, 0.9, None)
    assert ssdlite.first_stride(model) == 8 and model.outputs[0].shape[1] == rows[8]
    with pytest.raises(ValueError, match=r"--min-stride=4.*one of 16, 8"):
        tasks.get("detection", min_stride=4)
    with pytest.raises(ValueError, match="min_stride is chosen by the data"):  # left to the data, not yet chosen
        tasks.get("detection").export_options(shape)
    assert tasks.get("detection").describe_model(((144, 4), (144, 3))) == "detection model of 3 classes and 144 anchors"


def test_a_task_loads_its_sources_through_the_shared_pipelines():
    class Doubled(Task):  # a task of the user's own: its sources and target, the rest the defaults
        NAME = "doubled"

        def sources(self, data, image_size, data_dir, seed):
            images = np.zeros((10, image_size, image_size, 3), np.float32)
            return data_lib.slices(images, np.arange(10)), data_lib.slices(images[:4], np.arange(4)), tuple("abcdefghij")

        def target(self, label, classes, image_shape):
            return label * 2

    loaded = Doubled().load("mine", image_size=32, batch_size=4, holdout=2)
    assert (loaded.task.NAME, loaded.classes, loaded.train_size, loaded.val_size) == ("doubled", 10, 8, 4)
    _, targets = next(iter(loaded.val))
    _, truth = next(iter(loaded.evaluation))
    np.testing.assert_array_equal(targets, [0, 2, 4, 6])
    np.testing.assert_array_equal(truth, [0, 2, 4, 6])  # the truth is the target unless the task says otherwise


def test_a_builders_size_rule_takes_any_shape_form_and_applies_to_training_only():
    from keras_mbv3.applications import sizes
    from keras_mbv3.recipes import recipe

    assert sizes.SEGMENTATION.check_shape("input_shape", tf.TensorShape([64, 48, 3])) == (64, 48, 3)
    assert sizes.CLASSIFICATION.check_shape("input_shape", np.array([33, 40, 3])) == (33, 40, 3)
    assert sizes.SEGMENTATION.check_shape("input_shape", (None, None, 3)) == (None, None, 3)
    with pytest.raises(ValueError, match="static heights and widths"):
        sizes.DETECTION.check_shape("input_shape", (None, 64, 3))
    assert recipe.Run(None, task="segmentation", image_size=40).settings["image_size"] == 40  # eval of a 40 px file
    with pytest.raises(ValueError, match="--image-size.*40.*multiple of 16"):
        recipe.Run(None, task="segmentation", image_size=40).train()  # no LR-ASPP takes it: before any data loads
