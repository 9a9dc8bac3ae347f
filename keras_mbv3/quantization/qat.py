"""``quantize_model``: quantization-aware training on either Keras line, with the same int8 graph.

Both engines start from the same model: composite layers flattened into their
sub-layers (same weights, same float outputs), then the int8 form
(``int8_form``: hard activations as ``x * relu6(x + 3)`` with the 1/6 folded
into the convs that read it, which XNNPACK runs in int8). On Keras 3 our
engine (``keras_engine``, on ``keras.quantizers``) builds the QAT model; on
tf_keras, tfmot does (``tfmot_engine``).
"""

import contextlib
import warnings

from keras_mbv3.backend import IS_KERAS_3, keras
from keras_mbv3.quantization.calibration import CALIBRATION_SAMPLES, representative_images
from keras_mbv3.quantization.canonical import canonical_form
from keras_mbv3.quantization.int8_form import int8_form


def quantize_model(model, representative_dataset=None):
    """A QAT model computing ``model`` (any functional model built with ``keras_mbv3.layers`` and Keras layers).

    BN folds into the convs, and every activation, add, multiply and pooled
    mean gets a fake quantizer; no ``Lambda``/``TFOpLambda`` is involved. On
    Keras 3 the result is an ordinary functional model of
    ``keras_mbv3.layers.quantized`` layers (saves to ``.keras``, loads without a
    scope); on tf_keras a tfmot model (save to ``.h5``, load in ``quantize_scope()``).

    Args:
        model: a functional Keras model of the Keras line in use.
        representative_dataset: optional images of a one-input model (an array,
            a ``tf.data.Dataset`` of images or ``(images, labels)`` batches) to
            start every activation range at the float model's (mean per-batch
            min and max) instead of [-6, 6]; short fine-tunes need it, since the
            moving averages move 0.1% per step. Ranges are then kept inside
            XNNPACK's int8 limits (``keep_xnnpack_limits``).

    Raises:
        TypeError: for a model that is not a functional Keras model.
        ValueError: for a layer that has no int8 form (named, with its class).
    """
    folded = int8_form(canonical_form(model))  # a TypeError for a model that is not functional
    images = None
    if representative_dataset is not None:
        images = representative_images(representative_dataset, CALIBRATION_SAMPLES)
    qat = _engine().quantize(folded, images)
    if images is not None:
        keep_xnnpack_limits(qat)
    return qat


def keep_xnnpack_limits(qat_model):
    """Widen the ranges of ``qat_model`` that would break XNNPACK's int8 scale limits; return how many changed.

    ``quantize_model`` does it after calibration, ``KeepXnnpackLimits`` after
    every training epoch and ``export_tflite`` before converting, so that the
    int8 graph stays one XNNPACK partition (see ``xnnpack_limits``).
    """
    from keras_mbv3.quantization import xnnpack_limits

    constraints = _engine().range_constraints(qat_model)
    changed = xnnpack_limits.enforce(constraints)
    left = xnnpack_limits.violations(constraints)
    if left:  # only a fixed range could move, e.g. a HardGate's [0, 6] behind an input range over 383
        warnings.warn(f"ranges outside XNNPACK's int8 scale limits that cannot be widened, at {left}: "
                      "these ops will run outside XNNPACK", stacklevel=2)  # fmt: skip
    return changed


class KeepXnnpackLimits(keras.callbacks.Callback):
    """A Keras callback that keeps a QAT model's ranges inside XNNPACK's int8 limits at the end of every epoch."""

    def on_epoch_end(self, epoch, logs=None):
        keep_xnnpack_limits(self.model)


def quantize_scope():
    """Context in which saved QAT models load (``keras.models.load_model``); Keras 3 models need none."""
    return contextlib.nullcontext() if IS_KERAS_3 else _engine().quantize_scope()


def is_qat_model(model):
    """Whether ``model`` came from ``quantize_model`` (either engine)."""
    return _engine().is_qat_model(model)


def _engine():
    """The engine of the Keras line in use (imported on first use: tfmot is an optional extra)."""
    if IS_KERAS_3:
        from keras_mbv3.quantization import keras_engine

        return keras_engine
    from keras_mbv3.quantization import tfmot_engine

    return tfmot_engine
