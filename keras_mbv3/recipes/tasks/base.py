"""``Task``: what the recipe does differently per ``--task``, as keras-hub's ``Task`` / ``Preprocessor``.

A subclass states its constants and overrides what differs from these defaults, in
three parts: data (sources, augmentation, training targets, the evaluator's truth),
model and evaluation (builder, loss, metrics, output shapes, evaluator, export
options), and presentation (``mbv3 predict``'s results and overlays, the report's
curve and MediaPipe snippet). The recipe, evaluation, predict and report code call
these methods and nothing else of the task.
"""

from keras_mbv3 import checks
from keras_mbv3.recipes import data as data_lib
from keras_mbv3.recipes.settings import EMBEDDED, LENGTH_EPOCHS, LENGTH_RULE, LENGTH_STEPS


class Task:
    """Defaults shared by the tasks; subclasses set the constants below."""

    NAME = ""  # the --task value
    METRIC = ""  # the evaluator's headline value, e.g. "accuracy"
    MODEL_KIND = ""  # e.g. "classifier", in messages
    TITLE = ""  # after "MobileNetV3Small" in the metadata's model name, e.g. " SSDLite"
    CURVE = "accuracy"  # the report's training curve
    OUTPUT_RANKS = ()  # the ranks of its models' outputs (without the batch axis), one tuple per form
    CONSTRUCTORS = {}  # --model -> application builder
    INPUT_SIZE = None  # the builders' applications.sizes.SizeRule: --image-size is checked against it
    NEEDS_OVERLAYS = False  # mbv3 predict writes an overlay PNG per image
    MEDIAPIPE = ()  # (MediaPipe Tasks class, method, result expression, option) of the report's snippet
    DATA_FORMS = ""  # the --data values it takes, in words (the message of one it does not)
    # the settings its constructor takes (model layout and targets), recorded with the data settings -> the value
    # of the run folders made before the option (their settings.json leaves it out)
    OPTIONS = {}

    # --- data -------------------------------------------------------------------------------------------------
    def sources(self, data, image_size, data_dir, seed):
        """``(train, val, labels)``: unbatched ``tf.data`` pairs ``(image float32 (H, W, 3) in [0, 255], label)``
        and the class names in index order, for the ``--data`` value ``data``: the task's embedded set,
        ``"tfds:NAME"`` (where the task reads TensorFlow Datasets) or a folder."""
        if data == EMBEDDED[self.NAME]:
            return self.embedded(image_size, seed)
        if data.startswith("tfds:") and self.tfds is not None:
            return self.tfds(data[len("tfds:"):], data_dir, image_size)
        if data in data_lib.EMBEDDED_SETS or data.startswith("tfds:"):
            checks.fail("--data", data, f"for --task {self.NAME}: {self.DATA_FORMS}")
        return self.folder(data, image_size)

    def embedded(self, image_size, seed):
        """``sources`` of the task's embedded set (``settings.EMBEDDED``)."""
        raise NotImplementedError

    tfds = None  # a task that reads TensorFlow Datasets: ``tfds(name, data_dir, image_size)`` -> ``sources``

    def folder(self, path, image_size):
        """``sources`` of a folder in the task's layout."""
        raise NotImplementedError

    EPOCHS_RULE = f"the length rule: {LENGTH_RULE} (--epochs sets another length)"  # the log's words

    def default_epochs(self, train_size, batch_size):
        """``--epochs``' default: ``settings.LENGTH_RULE``, 100 epochs, at least 3,000 and at most 50,000 steps, in
        whole epochs (at least 3,000 rounds up, at most 50,000 rounds down).

        Measured on 2 cores, Small, batch 64, whole recipes (benchmarks/training_length.py
        and detection_small_data.py): detection on 800 canvases of 160 px at 96 px,
        20 epochs (260 steps) float mAP@.5 0.144, the rule's 231 epochs (3,003 steps)
        0.865; classification of 1,600 drawn shapes at 32 px, 20 epochs (500 steps)
        35.8% and the rule's 120 (3,000) 47.5%; of the 1,438 digits, 20 epochs 99.16%,
        the rule's 131 (3,013 steps) 99.44% (int8 99.72%), in 3.7x the time;
        segmentation of digits-seg at 64 px, 20 epochs mIoU 65.5%, the rule's 131 77.4% (4.5x the time).
        """
        per_epoch = data_lib.steps_per_epoch(train_size, batch_size)
        steps = min(max(LENGTH_EPOCHS * per_epoch, LENGTH_STEPS[0]), LENGTH_STEPS[1])
        return max(1, -(-steps // per_epoch) if steps > LENGTH_EPOCHS * per_epoch else steps // per_epoch)

    def length_advice(self, epochs, train_size, batch_size, history):
        """Advice to train longer (``--epochs N``) where a run trained fewer epochs than the rule gives its data set
        (``default_epochs``; None for a run as long), with the validation loss's fall over the last quarter of the
        epochs from ``history`` (``training.read_history``'s).

        The fall alone cannot tell: under the cosine decay, with BatchNormalization
        moving averages that lag 10% of the steps, the validation loss fell 2.5-34%
        over the last quarter in every run measured (detection at 0.144 and at 0.865
        mAP@.5, the digits demos at 99%).
        """
        rule, per_epoch = self.default_epochs(train_size, batch_size), data_lib.steps_per_epoch(train_size, batch_size)
        if epochs >= rule:
            return None
        losses = history.get("val_loss", [])
        window = max(1, len(losses) // 4)
        fell = (f"; the validation loss fell {1 - losses[-1] / losses[-window - 1]:.1%} over the last {window} epoch(s)"
                if len(losses) > window and losses[-window - 1] > 0 else "")  # fmt: skip
        return (f"{epochs} epochs ({epochs * per_epoch:,} steps) are fewer than the {rule} ({rule * per_epoch:,} steps) "
                f"of the length rule for {train_size:,} training images{fell}: train longer: --epochs {rule}")

    def augment(self, image, label, seed):
        """A training pair augmented for the stateless ``seed`` (a random translation by default)."""
        return data_lib.translate(image, seed), label

    def target(self, label, classes, image_shape):
        """The model's training target for ``label`` (the label itself by default)."""
        return label

    def truth(self, label, classes):
        """What the evaluator compares the outputs with: the training target by default."""
        return self.target(label, classes, None)

    def options_by_data(self, train):
        """``(options, why)``: the ``OPTIONS`` this task leaves to the data (those None), chosen from the training
        pairs ``train`` (a ``sources`` split), and why, in words: none by default."""
        return {}, ""

    @property
    def options(self):
        """``{option: value}`` of its ``OPTIONS`` (the constructor's arguments)."""
        return {key: getattr(self, key) for key in self.OPTIONS}

    def load(self, data, image_size=32, batch_size=64, data_dir=None, seed=0, holdout=0, repeatable=False, log=None):
        """``data_lib.Data`` of the ``--data`` value ``data`` for this task (see ``data_lib.pipelines``); its ``task``
        has the options left to the data chosen (``options_by_data``), and ``log`` is told why."""
        train, val, labels = self.sources(data, image_size, data_dir, seed)
        chosen, why = self.options_by_data(train)
        task = type(self)(**{**self.options, **chosen}) if chosen else self
        if chosen and log:
            log(why)
        return data_lib.pipelines(task, data, train, val, labels, image_size, batch_size, seed, holdout, repeatable)

    # --- model and evaluation ---------------------------------------------------------------------------------
    def build_model(self, size, minimalistic, classes, input_shape, alpha, bn_momentum, weights):
        """A new model; ``weights`` (``"imagenet"`` or a weights file) initializes the backbone."""
        raise NotImplementedError

    def loss(self):
        raise NotImplementedError

    def metrics(self):
        return None

    def expected_outputs(self, classes, image_shape):
        """The output shapes of its model files, one tuple of shapes per form (e.g. Keras and ``.tflite``)."""
        raise NotImplementedError

    def options_of_model(self, input_shape, output_shapes):
        """The ``OPTIONS`` a model of these shapes (without the batch axis) was built with, where they tell:
        none by default."""
        return {}

    def evaluator(self, classes, image_shape):
        """A new evaluator: ``update(outputs, truth)`` per batch, then ``result()`` -> ``{METRIC: value, ...}``."""
        raise NotImplementedError

    def export_options(self, image_shape):
        """More ``export_tflite`` arguments for the run's ``.tflite`` files: none by default."""
        return {}

    def metadata_labels(self, labels):
        """The class names written into the exports' metadata: all of them, in index order, by default."""
        return labels

    # --- presentation -----------------------------------------------------------------------------------------
    def describe_model(self, output_shapes):
        """``"classifier of 10 classes"`` for a model of ``output_shapes``."""
        return f"{self.MODEL_KIND} of {output_shapes[0][-1]} classes"

    def class_names(self, output_shapes):
        """Names for a file without metadata: the class indices."""
        return tuple(str(i) for i in range(output_shapes[0][-1]))

    def predict(self, path, image, output, names, options):
        """One image's result of ``mbv3 predict`` (a JSON-ready dict)."""
        raise NotImplementedError

    def describe(self, result):
        """The line ``mbv3 predict`` prints for ``result``."""
        raise NotImplementedError
