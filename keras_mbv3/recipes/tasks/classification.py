"""``--task classification``: MobileNetV3 classifiers, accuracy."""

import numpy as np
import tensorflow as tf

from keras_mbv3.applications import MobileNetV3Large, MobileNetV3Small, mobilenet_v3
from keras_mbv3.backend import keras
from keras_mbv3.recipes import data as data_lib
from keras_mbv3.recipes.tasks.base import Task


class Classification(Task):
    NAME = "classification"
    METRIC = "accuracy"
    MODEL_KIND = "classifier"
    OUTPUT_RANKS = ((1,),)  # (classes,)
    CONSTRUCTORS = {"small": MobileNetV3Small, "large": MobileNetV3Large}
    INPUT_SIZE = mobilenet_v3.INPUT_SIZE
    MEDIAPIPE = ("ImageClassifier", "classify", "result.classifications[0].categories", "max_results=3")
    DATA_FORMS = "'digits', a folder or 'tfds:NAME'"

    # --- data
    def embedded(self, image_size, seed):
        (train_x, train_y), (val_x, val_y) = data_lib.digits(image_size, seed=seed)
        return data_lib.slices(train_x, train_y), data_lib.slices(val_x, val_y), data_lib.DIGIT_NAMES

    def tfds(self, name, data_dir, image_size):
        return data_lib.tfds_classes(name, data_dir, image_size)

    def folder(self, path, image_size):
        return data_lib.class_folders(path, image_size)

    def target(self, label, classes, image_shape):
        return tf.one_hot(tf.cast(label, tf.int32), classes)

    # --- model and evaluation
    def build_model(self, size, minimalistic, classes, input_shape, alpha, bn_momentum, weights):
        """A classifier; ``weights`` (``"imagenet"`` or a backbone weights file) initializes all but the top."""
        constructor = self.CONSTRUCTORS[size]
        model = constructor(input_shape=input_shape, alpha=alpha, minimalistic=minimalistic, weights=None,
                            classes=classes, bn_momentum=bn_momentum)  # fmt: skip
        if weights is not None:
            backbone = constructor(input_shape=input_shape, alpha=alpha, minimalistic=minimalistic, weights=weights,
                                   include_top=False)  # fmt: skip
            for layer in backbone.layers:
                if layer.weights:
                    model.get_layer(layer.name).set_weights(layer.get_weights())
        return model

    def loss(self, label_smoothing=0.1):
        return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)

    def metrics(self):
        return ["accuracy"]

    def expected_outputs(self, classes, image_shape):
        return [((classes,),)]

    def evaluator(self, classes, image_shape):
        return AccuracyEvaluator()

    # --- presentation
    def predict(self, path, image, output, names, options):
        """``{"image", "top": [{"class", "name", "score"}]}``: the ``options["top_k"]`` best classes."""
        order = np.argsort(-output)[: options["top_k"]]
        return {"image": path, "top": [{"class": int(i), "name": names[i], "score": round(float(output[i]), 4)}
                                       for i in order]}  # fmt: skip

    def describe(self, result):
        return result["image"] + ": " + ", ".join(f"{t['name']} {t['score']:.3f}" for t in result["top"])


class AccuracyEvaluator:
    """Top-1 accuracy over the batches given to ``update`` (one-hot truth)."""

    def __init__(self):
        self.correct, self.count = 0, 0

    def update(self, outputs, targets):
        self.correct += int(np.sum(outputs.argmax(-1) == targets.argmax(-1)))
        self.count += len(outputs)

    def result(self):
        return {Classification.METRIC: self.correct / max(self.count, 1)}
