"""Layers, one class per Caffe type, registered by that name in LAYER_TYPES."""
from cnntrain.layers import (activation, conv, data, deconv, inner_product, loss,  # noqa: F401
                             norm, pool, structure)  # (imported to register their types)
from cnntrain.layers.base import LAYER_TYPES, BuildContext, Layer, SetupError, register

__all__ = ["LAYER_TYPES", "BuildContext", "Layer", "SetupError", "register"]
