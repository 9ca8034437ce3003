"""Array kernels (im2col, col2im, GEMM, scratch buffers). Knows no layer, net or config."""
from cnntrain.engine.accounting import gemm, kernel_time
from cnntrain.engine.im2col import (batch_chunk, channel_major_to_nchw, col2im, col2im_nchw,
                                    conv_out_size, groups_to_nchw, im2col, im2col_nchw,
                                    nchw_to_channel_major, nchw_to_groups, pad_to_nhwc)
from cnntrain.engine.workspace import Workspace

__all__ = ["Workspace", "batch_chunk", "channel_major_to_nchw", "col2im", "col2im_nchw",
           "conv_out_size", "gemm", "groups_to_nchw", "im2col", "im2col_nchw", "kernel_time",
           "nchw_to_channel_major", "nchw_to_groups", "pad_to_nhwc"]
