"""Reading Caffe's kernel/stride/pad fields (square, [h, w], or *_h/*_w) in one way."""
from __future__ import annotations

from typing import Any

from cnntrain.engine import conv_out_size
from cnntrain.engine.conv_plan import ConvGeometry
from cnntrain.layers.base import SetupError


def pair(block: Any, name: str, field: str, default: int | None) -> tuple[int, int]:
    """(h, w) from ``<field>``, ``<field>_h``/``<field>_w``; kernel_size is ``kernel_size``."""
    key = "kernel_size" if field == "kernel" else field
    both = block.get(key)
    h, w = block.get(f"{field}_h"), block.get(f"{field}_w")
    if both is not None and (h is not None or w is not None):
        raise SetupError(f"give either {key} or {field}_h/{field}_w, not both", f"{name}.{key}")
    if (h is None) != (w is None):
        raise SetupError(f"{field}_h and {field}_w go together", f"{name}.{field}_h")
    if h is not None:
        return h, w
    if both is None:
        if default is None:
            raise SetupError(f"{key} (or {field}_h and {field}_w) is required", f"{name}.{key}")
        return default, default
    if isinstance(both, int):
        return both, both
    if len(both) == 1:
        return both[0], both[0]
    if len(both) == 2:
        return both[0], both[1]
    raise SetupError(f"takes 1 or 2 values for a 2-D layer, got {len(both)}", f"{name}.{key}")


def conv_geometry(block: Any, name: str, channels: int) -> ConvGeometry:
    """A convolution_param's kernel, stride, pad, dilation, group and num_output, with
    the group checked against ``channels`` (the bottom's) and num_output."""
    if channels % block.group or block.num_output % block.group:
        raise SetupError(f"group {block.group} must divide the input channels ({channels}) and "
                         f"num_output ({block.num_output})", f"{name}.group")
    return ConvGeometry(*pair(block, name, "kernel", None), *pair(block, name, "stride", 1),
                        *pair(block, name, "pad", 0), *pair(block, name, "dilation", 1),
                        block.group, block.num_output)


def window_geometry(block: Any, name: str, num_output: int) -> ConvGeometry:
    """The geometry of a block with kernel, stride and pad fields only (no group or
    dilation), as a one-group convolution to ``num_output`` channels."""
    return ConvGeometry(*pair(block, name, "kernel", None), *pair(block, name, "stride", 1),
                        *pair(block, name, "pad", 0), 1, 1, 1, num_output)


def check_kernel_fits(geo: ConvGeometry, h: int, w: int, name: str) -> tuple[int, int]:
    """The output size (Ho, Wo) of convolving an h x w input, or a SetupError on
    ``<name>.kernel_size`` when the (dilated) kernel is larger than the padded input."""
    span_h, span_w = geo.dh * (geo.kh - 1) + 1, geo.dw * (geo.kw - 1) + 1
    if h + 2 * geo.ph < span_h or w + 2 * geo.pw < span_w:
        dilated = f" (dilated to {span_h}x{span_w})" if (geo.dh, geo.dw) != (1, 1) else ""
        raise SetupError(f"kernel {geo.kh}x{geo.kw}{dilated} is larger than the padded "
                         f"input {h + 2 * geo.ph}x{w + 2 * geo.pw}", f"{name}.kernel_size")
    return (conv_out_size(h, geo.kh, geo.sh, geo.ph, geo.dh),
            conv_out_size(w, geo.kw, geo.sw, geo.pw, geo.dw))


def nchw(bottom_shapes) -> tuple[int, int, int, int]:
    """The single bottom's (N, C, H, W), or a SetupError if it is not 4-D."""
    (shape,) = bottom_shapes
    if len(shape) != 4:
        raise SetupError(f"needs a 4-D bottom (N, C, H, W), got shape {tuple(shape)}", "bottom")
    return tuple(shape)
