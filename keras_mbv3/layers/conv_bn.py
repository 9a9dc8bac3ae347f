"""Conv + BatchNormalization (+ activation): the unit every block and head is made of.

One builder, so that the BN epsilon (1e-3, keras.applications' and torchvision's
MobileNetV3) and the sub-layer names (``{conv}``, ``{conv}_bn``, ``{conv}_{activation}``,
the contract with saved weights) are stated once.
"""

from keras_mbv3.backend import keras
from keras_mbv3.layers.activations import activation_layer

BN_EPSILON = 1e-3


def conv_bn_act(conv, activation, bn_momentum, bn_name=None, activation_name=None):
    """``[conv, BatchNormalization, activation]`` layers (no activation layer when ``activation`` is None).

    Args:
        conv: a new (unbuilt) convolution layer without bias; its name and dtype policy are the parts'.
        activation: None or a kind of ``activations.activation_layer`` (``"relu"``, ``"relu6"``, ``"hard_swish"``, ...).
        bn_momentum: the BatchNormalization's momentum.
        bn_name, activation_name: the defaults are ``{conv.name}_bn`` and ``{conv.name}_{activation}``.

    Returns:
        The layers in call order, created conv first (the weights' order in a saved file).
    """
    dtype = conv.dtype_policy.name
    bn = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=bn_momentum,
                                         name=bn_name or f"{conv.name}_bn", dtype=dtype)  # fmt: skip
    if activation is None:
        return [conv, bn]
    return [conv, bn, activation_layer(activation, name=activation_name or f"{conv.name}_{activation}", dtype=dtype)]
