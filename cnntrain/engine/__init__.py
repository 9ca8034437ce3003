"""Array kernels (im2col, col2im, scratch buffers). Knows no layer, net or config."""
from cnntrain.engine.im2col import batch_chunk, col2im, conv_out_size, im2col, pad_to_nhwc
from cnntrain.engine.workspace import Workspace

__all__ = ["Workspace", "batch_chunk", "col2im", "conv_out_size", "im2col", "pad_to_nhwc"]
