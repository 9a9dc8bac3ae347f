"""Multiply-adds of a model, counted the way the paper does (convolutions and dense layers)."""

from keras_mbv3.backend import keras
from keras_mbv3.layers.flatten import flatten_model


def count_madds(model):
    """Multiply-adds of one forward pass of ``model`` (static input size) in its conv and dense layers.

    A conv counts ``H_out * W_out * C_out * k_h * k_w * C_in / groups``, a depthwise
    conv ``H_out * W_out * C_out * k_h * k_w``, a dense layer ``C_in * C_out``;
    element-wise ops, pooling and BN (folded at inference) are not counted.
    """
    total = 0
    for layer in flatten_model(model).layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            _, h, w, c = layer.output.shape
            total += h * w * c * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, c = layer.output.shape
            groups = getattr(layer, "groups", 1)
            total += h * w * c * layer.kernel_size[0] * layer.kernel_size[1] * layer.input.shape[-1] // groups
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return total
