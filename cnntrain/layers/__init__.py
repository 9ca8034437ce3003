"""Layers, one class per Caffe type, registered by that name in LAYER_TYPES."""
from cnntrain.layers import (activation, bouvrie, conv, data, inner_product,  # noqa: F401
                             loss, pool)  # (register)
from cnntrain.layers.base import LAYER_TYPES, BuildContext, Layer, SetupError, register

__all__ = ["LAYER_TYPES", "BuildContext", "Layer", "SetupError", "register"]
