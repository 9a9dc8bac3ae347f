"""MobileNetV3 models: classification, multi-scale features, LR-ASPP segmentation and SSDLite detection."""

from keras_mbv3.applications.from_keras import from_keras
from keras_mbv3.applications.features import FeatureInfo, feature_info, feature_model
from keras_mbv3.applications.mobilenet_v3 import (
    MobileNetV3Large,
    MobileNetV3Small,
    decode_predictions,
    preprocess_input,
)
from keras_mbv3.applications.segmentation import LRASPPMobileNetV3Large, LRASPPMobileNetV3Small
from keras_mbv3.applications.ssdlite import SSDLiteMobileNetV3Large, SSDLiteMobileNetV3Small

__all__ = [
    "MobileNetV3Large",
    "MobileNetV3Small",
    "preprocess_input",
    "decode_predictions",
    "feature_model",
    "feature_info",
    "FeatureInfo",
    "from_keras",
    "LRASPPMobileNetV3Large",
    "LRASPPMobileNetV3Small",
    "SSDLiteMobileNetV3Large",
    "SSDLiteMobileNetV3Small",
]
