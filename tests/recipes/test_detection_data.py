"""--task detection's data: digits-det, COCO-format folders, TFDS detection sets, box-moving augmentation,
the task's targets and its COCO mAP evaluator."""

import json

import numpy as np
import pytest
import tensorflow as tf

from keras_mbv3.applications import ssdlite
from keras_mbv3.recipes import data, detection_data, tasks


def test_digits_det_is_deterministic_and_boxes_hold_the_strokes():
    first = detection_data.digits_detection(64, train_images=40, val_images=10, seed=3)
    again = detection_data.digits_detection(64, train_images=40, val_images=10, seed=3)
    other = detection_data.digits_detection(64, train_images=40, val_images=10, seed=4)
    for a, b in zip(first, again):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert not np.array_equal(first[0][0], other[0][0])
    images, boxes, labels = first[0]
    assert images.shape == (40, 64, 64, 3) and boxes.shape == (40, 3, 4) and labels.shape == (40, 3)
    assert set(np.unique(labels)) <= set(range(11)) and np.all((labels > 0).sum(1) >= 1)
    for image, image_boxes, image_labels in zip(images, boxes, labels):
        inside = np.zeros((64, 64), bool)
        for (ymin, xmin, ymax, xmax), label in zip(image_boxes * 64, image_labels):
            if label:
                region = image[int(ymin) : int(ymax), int(xmin) : int(xmax), 0]
                assert region.max() > detection_data.STROKE  # a digit in every box
                inside[int(ymin) : int(ymax), int(xmin) : int(xmax)] = True
        assert not np.any(image[..., 0][~inside] > detection_data.STROKE)  # no stroke outside the boxes


def test_digits_det_splits_the_scans_as_digits_does():
    """Training and validation canvases are made of disjoint scans: the digits' own split."""
    scans, digits = data.digit_scans()
    (train, _), (val, _) = data.split_pairs(scans, digits, 0.2, 0)
    seen = {s.tobytes() for s in train}
    assert not any(s.tobytes() in seen for s in val)


def write_coco(root, split, images, annotations, categories):
    from PIL import Image

    folder = root / split
    folder.mkdir(parents=True)
    for image in images:
        pixels = np.zeros((image["height"], image["width"], 3), np.uint8)
        Image.fromarray(pixels).save(folder / image["file_name"])
    (folder / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}))  # fmt: skip


def coco_folder(root):
    categories = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]  # ids with gaps, out of order
    images = [{"id": 1, "file_name": "a.png", "height": 40, "width": 80},
              {"id": 2, "file_name": "b.jpg", "height": 50, "width": 50}]  # fmt: skip
    annotations = [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [8, 4, 40, 20], "iscrowd": 0},
                   {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0, 0, 80, 40], "iscrowd": 1},
                   {"id": 3, "image_id": 1, "category_id": 3, "bbox": [60, 20, 20, 20], "iscrowd": 0}]  # fmt: skip
    for split in ("train", "val"):
        write_coco(root, split, images, annotations, categories)


def test_coco_folder_numbers_categories_and_normalizes_boxes(tmp_path):
    coco_folder(tmp_path)
    loaded = tasks.load(str(tmp_path), "detection", image_size=64, batch_size=2)
    assert loaded.labels == ("background", "cat", "dog") and loaded.classes == 3
    assert (loaded.train_size, loaded.val_size) == (2, 2)
    images, truth = next(loaded.evaluation.as_numpy_iterator())
    assert images.shape == (2, 64, 64, 3) and truth[detection_data.MIRRORABLE].all()  # photos: flipped in training
    next(iter(loaded.train))  # the augmentation (crop and flip) runs
    # image a: the dog (category 7 -> 2) at x 8..48 of 80, y 4..24 of 40; the cat (3 -> 1); the crowd box left out
    np.testing.assert_allclose(truth["boxes"][0], [[0.1, 0.1, 0.6, 0.6], [0.5, 0.75, 1.0, 1.0]], atol=1e-6)
    np.testing.assert_array_equal(truth["labels"], [[2, 1], [0, 0]])  # image b has none: padding


@pytest.mark.parametrize("problem, message", [("no-json", "annotations.json"), ("missing-image", "is missing"),
                                              ("other-categories", "same categories"),
                                              ("unknown-category", "annotation 3.*category 9")])  # fmt: skip
def test_bad_coco_folders_name_the_problem(tmp_path, problem, message):
    coco_folder(tmp_path)
    if problem == "no-json":
        (tmp_path / "val" / "annotations.json").unlink()
    elif problem == "missing-image":
        (tmp_path / "train" / "a.png").unlink()
    elif problem == "unknown-category":
        coco = json.loads((tmp_path / "train" / "annotations.json").read_text())
        coco["annotations"][2]["category_id"] = 9
        (tmp_path / "train" / "annotations.json").write_text(json.dumps(coco))
    else:
        coco = json.loads((tmp_path / "val" / "annotations.json").read_text())
        coco["categories"][0]["name"] = "wolf"
        (tmp_path / "val" / "annotations.json").write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=message):
        tasks.load(str(tmp_path), "detection", image_size=64)


def test_tfds_detection_set(tmp_path):
    import tensorflow_datasets as tfds

    class TinyBoxes(tfds.core.GeneratorBasedBuilder):
        """One bright square per 16x16 image, built here (nothing downloaded)."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(16, 16, 3)),
                "objects": tfds.features.Sequence({"bbox": tfds.features.BBoxFeature(),
                                                   "label": tfds.features.ClassLabel(names=["ball", "cube"])})}))  # fmt: skip

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(6), "validation": self._generate_examples(2)}

        def _generate_examples(self, n):
            for i in range(n):
                image = np.zeros((16, 16, 3), np.uint8)
                image[4:12, 2:10] = 255
                box = tfds.features.BBox(ymin=0.25, xmin=0.125, ymax=0.75, xmax=0.625)
                yield i, {"image": image, "objects": {"bbox": [box], "label": [i % 2]}}

    TinyBoxes(data_dir=str(tmp_path)).download_and_prepare()
    loaded = tasks.load("tfds:tiny_boxes", "detection", image_size=32, batch_size=2, data_dir=str(tmp_path))
    assert loaded.labels == ("background", "ball", "cube") and (loaded.train_size, loaded.val_size) == (6, 2)
    images, truth = next(loaded.evaluation.as_numpy_iterator())
    np.testing.assert_allclose(truth["boxes"][:, 0], [[0.25, 0.125, 0.75, 0.625]] * 2, atol=1e-6)
    np.testing.assert_array_equal(truth["labels"][:, 0], [1, 2])


def square_image():
    image = np.zeros((32, 32, 3), np.float32)
    image[8:24, 12:20] = 255.0
    return tf.constant(image), {"boxes": tf.constant([[0.25, 0.375, 0.75, 0.625]]), "labels": tf.constant([4])}


def test_random_crop_moves_the_boxes_with_the_pixels():
    image, truth = square_image()
    shapes = set()
    for i in range(12):
        cropped, moved = detection_data.random_crop(image, truth, tf.constant([i, 1]))
        again, _ = detection_data.random_crop(image, truth, tf.constant([i, 1]))
        np.testing.assert_array_equal(cropped.numpy(), again.numpy())  # deterministic per seed
        assert cropped.shape == (32, 32, 3)
        (ymin, xmin, ymax, xmax), = moved["boxes"].numpy() * 32
        assert moved["labels"].numpy().tolist() == [4]
        bright = np.argwhere(cropped.numpy()[..., 0] > 127)
        assert abs(bright[:, 0].min() - ymin) <= 1.5 and abs(bright[:, 0].max() + 1 - ymax) <= 1.5
        assert abs(bright[:, 1].min() - xmin) <= 1.5 and abs(bright[:, 1].max() + 1 - xmax) <= 1.5
        shapes.add((round(float(ymin)), round(float(xmin))))
    assert len(shapes) > 4


def test_random_crop_drops_boxes_whose_center_leaves():
    image, _ = square_image()
    truth = {"boxes": tf.constant([[0.0, 0.0, 0.1, 0.1], [0.4, 0.4, 0.6, 0.6]]), "labels": tf.constant([1, 2])}
    kept = [detection_data.random_crop(image, truth, tf.constant([i, 5]))[1]["labels"].numpy().tolist()
            for i in range(20)]  # fmt: skip
    assert [2] in kept and all(2 in k for k in kept)  # the central box always stays, the corner one not always


def test_random_zoom_out_moves_the_boxes_with_the_pixels_and_keeps_them_large_enough():
    image, truth = square_image()  # the box is 0.5 x 0.25 of the side
    zoomed, sides = 0, set()
    for i in range(16):
        moved_image, moved = detection_data.random_zoom_out(image, truth, tf.constant([i, 2]), min_side=0.1)
        again, _ = detection_data.random_zoom_out(image, truth, tf.constant([i, 2]), min_side=0.1)
        np.testing.assert_array_equal(moved_image.numpy(), again.numpy())  # deterministic per seed
        assert moved_image.shape == (32, 32, 3) and moved["labels"].numpy().tolist() == [4]
        (ymin, xmin, ymax, xmax), = moved["boxes"].numpy() * 32
        if not np.array_equal(moved_image.numpy(), image.numpy()):
            zoomed += 1
            bright = np.argwhere(moved_image.numpy()[..., 0] > 127)
            assert abs(bright[:, 0].min() - ymin) <= 1.5 and abs(bright[:, 0].max() + 1 - ymax) <= 1.5
            assert abs(bright[:, 1].min() - xmin) <= 1.5 and abs(bright[:, 1].max() + 1 - xmax) <= 1.5
            filled = np.isclose(moved_image.numpy(), image.numpy().mean(axis=(0, 1)), atol=1e-3).all(axis=-1)
            assert filled.sum() >= 2 * 32 - 1  # at least a row and a column of the canvas: the mean colour
            assert (xmax - xmin) / 32 >= 0.125 / 2  # at most 2x smaller
            sides.add(round(float(xmax - xmin)))
        else:
            np.testing.assert_allclose(moved["boxes"].numpy(), truth["boxes"].numpy())
    assert 3 <= zoomed <= 13 and len(sides) > 2
    # a box of 0.15 of the side may shrink to 0.1, no further
    small = {"boxes": tf.constant([[0.4, 0.4, 0.55, 0.55]]), "labels": tf.constant([1])}
    smallest = min(float(np.ptp(detection_data.random_zoom_out(image, small, tf.constant([i, 3]), max_ratio=4.0,
                                                               probability=1.0)[1]["boxes"].numpy()[0, ::2]))
                   for i in range(12))  # fmt: skip
    assert 0.1 - 1 / 32 <= smallest < 0.13
    # no box (a canvas without objects): zoomed up to max_ratio
    empty = {"boxes": tf.zeros((0, 4)), "labels": tf.zeros((0,), tf.int32)}
    moved_image, moved = detection_data.random_zoom_out(image, empty, tf.constant([0, 0]), probability=1.0)
    assert moved_image.shape == (32, 32, 3) and moved["boxes"].shape == (0, 4)


def test_horizontal_flip_mirrors_image_and_boxes_for_half_the_seeds():
    image = np.zeros((32, 32, 3), np.float32)
    image[8:24, 4:12] = 255.0
    truth = {"boxes": tf.constant([[0.25, 0.125, 0.75, 0.375]]), "labels": tf.constant([1])}
    flipped = 0
    for i in range(16):
        moved_image, moved = detection_data.horizontal_flip(tf.constant(image), truth, tf.constant([i, 0]))
        mirrored = not np.array_equal(moved_image.numpy(), image)
        flipped += mirrored
        expected = [[0.25, 0.625, 0.75, 0.875]] if mirrored else [[0.25, 0.125, 0.75, 0.375]]
        np.testing.assert_allclose(moved["boxes"].numpy(), expected, atol=1e-6)
        if mirrored:
            np.testing.assert_array_equal(moved_image.numpy(), image[:, ::-1])
    assert 3 <= flipped <= 13


@pytest.mark.slow
def test_the_task_matches_every_digit_to_anchors():
    loaded = tasks.load("digits-det", "detection", image_size=64, batch_size=8, holdout=8)
    next(iter(loaded.train))  # cropped (a crop may leave a canvas without digits), never flipped: digits
    images, (boxes_target, class_target) = next(iter(loaded.holdout))  # 8 canvases as they are
    assert detection_data.MIRRORABLE not in next(iter(loaded.evaluation))[1]
    np.testing.assert_array_equal(boxes_target.numpy(), class_target.numpy())
    anchors = ssdlite.size_anchors((64, 64), loaded.task.min_stride)
    assert boxes_target.shape == (8, len(anchors), 5)
    assert np.all((class_target.numpy()[..., 4] > 0).sum(-1) >= 1)  # every canvas has a matched digit


def test_evaluator_gives_1_for_the_truth_and_less_for_shifted_boxes():
    kind = tasks.get("detection")
    truth = {"boxes": np.array([[[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.9, 0.8]]], np.float32),
             "labels": np.array([[3, 1]])}  # fmt: skip

    def found(shift):
        boxes = np.zeros((1, 4, 4), np.float32)
        boxes[0, :2] = truth["boxes"][0] + shift
        return [boxes, np.array([[2.0, 0.0, 0, 0]]), np.array([[0.9, 0.8, 0, 0]]), np.array([2.0])]  # .tflite form

    results = []
    for shift in (0.0, 0.05, 0.3):
        evaluator = kind.evaluator(4, (64, 64, 3))
        evaluator.update(found(shift), truth)
        results.append(evaluator.result())
    assert results[0]["map"] == pytest.approx(1.0) and results[0]["map50"] == pytest.approx(1.0)
    assert results[1]["map50"] == pytest.approx(1.0) and results[1]["map"] < 1.0
    assert results[2]["map"] == pytest.approx(0.0)


def test_digits_det_validation_does_not_depend_on_the_training_canvases():
    _, val = detection_data.digits_detection(64, train_images=20, val_images=5)
    _, again = detection_data.digits_detection(64, train_images=30, val_images=5)
    for a, b in zip(val, again):
        np.testing.assert_array_equal(a, b)


def test_detection_image_size_is_checked_before_any_data_is_built():
    from keras_mbv3.recipes.recipe import Run

    with pytest.raises(ValueError, match="--image-size.*100.*multiple of 32"):
        Run(None, task="detection", image_size=100).train()  # the builder's rule, before the data loads


def test_median_box_side_is_the_median_square_root_of_the_areas_of_a_sample():
    """What detection's ``min_stride`` default reads (``Detection.options_by_data``)."""
    from keras_mbv3.recipes.settings import SMALL_OBJECTS_RULE
    from keras_mbv3.recipes.tasks.detection import SMALL_SIDE

    boxes = [[[0.0, 0.0, 0.1, 0.4]], [[0.5, 0.5, 0.6, 0.6], [0.0, 0.0, 0.5, 0.5]], np.zeros((0, 4))]  # 0.2, 0.1, 0.5
    pairs = tf.data.Dataset.from_generator(lambda: ((np.zeros((2, 2, 3), np.float32), {"boxes": np.array(b, np.float32)})
                                                    for b in boxes), output_signature=(
        tf.TensorSpec((2, 2, 3)), {"boxes": tf.TensorSpec((None, 4))}))  # fmt: skip
    assert detection_data.median_box_side(pairs) == pytest.approx(0.2)
    assert detection_data.median_box_side(pairs, sample=1) == pytest.approx(0.2)
    assert detection_data.median_box_side(pairs.skip(1), sample=1) == pytest.approx(0.3)  # 0.1 and 0.5
    assert detection_data.median_box_side(pairs.skip(2)) is None
    assert f"under {SMALL_SIDE} of the image's" in SMALL_OBJECTS_RULE  # the help's rule is the task's
