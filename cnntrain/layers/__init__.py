"""Layers, one class per Caffe type, registered by that name in LAYER_TYPES."""
from cnntrain.layers import (activation, conv, data, inner_product, loss, norm,  # noqa: F401
                             pool, structure)  # (imported to register their types)
from cnntrain.layers.base import LAYER_TYPES, BuildContext, Layer, SetupError, register

__all__ = ["LAYER_TYPES", "BuildContext", "Layer", "SetupError", "register"]
