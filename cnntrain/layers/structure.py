"""Layers that route blobs without learning: Concat, Slice, Split, Eltwise, Reshape, Crop."""
from __future__ import annotations

import math

import numpy as np

from cnntrain.engine.parallel import over_slices, ufunc_over_batch
from cnntrain.layers.base import Layer, SetupError, register
from cnntrain.layers.inner_product import canonical_axis

MANY = 64   # most bottoms or tops a routing layer takes


def legacy_axis(p, block: str, legacy: str, ndim: int) -> int:
    """``axis`` (default 1, may be negative) or its old non-negative name, not both."""
    if p[legacy] is not None:
        if p.axis is not None:
            raise SetupError(f"give either axis or {legacy} (its old name), not both",
                             f"{block}.{legacy}")
        if p[legacy] >= ndim:
            raise SetupError(f"{legacy} {p[legacy]} is out of range for a {ndim}-D bottom",
                             f"{block}.{legacy}")
        return p[legacy]
    return canonical_axis(1 if p.axis is None else p.axis, ndim, f"{block}.axis")


def _boundaries(sizes) -> list[int]:
    """Where to split an axis into parts of ``sizes`` (for np.split)."""
    return list(np.cumsum(sizes)[:-1])


@register("Concat")
class Concat(Layer):
    """Join the bottoms along ``axis``; every other dimension must agree."""

    param_blocks = ("concat_param",)
    num_bottom = (1, MANY)

    def setup(self, bottom_shapes):
        first = tuple(bottom_shapes[0])
        self.axis = legacy_axis(self.param("concat_param"), "concat_param", "concat_dim",
                                len(first))
        for i, shape in enumerate(bottom_shapes[1:], 1):
            others = [d for k, d in enumerate(shape) if k != self.axis]
            if len(shape) != len(first) or others != [d for k, d in enumerate(first)
                                                      if k != self.axis]:
                raise SetupError(f"bottom {i} has shape {tuple(shape)}, bottom 0 {first}: only "
                                 f"axis {self.axis} may differ", "bottom")
        self.sizes = [s[self.axis] for s in bottom_shapes]
        out = list(first)
        out[self.axis] = sum(self.sizes)
        return [tuple(out)]

    def forward(self, bottom):
        return [self.xp.concatenate(bottom, axis=self.axis)]

    def backward(self, top_diff, propagate_down):
        parts = self.xp.split(top_diff[0], _boundaries(self.sizes), axis=self.axis)
        return [d if want else None for d, want in zip(parts, propagate_down)]


@register("Slice")
class Slice(Layer):
    """Cut the bottom along ``axis`` at ``slice_point`` (or into equal parts), one top
    per piece; the backward joins the pieces' gradients again."""

    param_blocks = ("slice_param",)
    num_top = (1, MANY)

    def setup(self, bottom_shapes):
        (shape,) = bottom_shapes
        p = self.param("slice_param")
        self.axis = legacy_axis(p, "slice_param", "slice_dim", len(shape))
        dim, tops = shape[self.axis], len(self.spec.top)
        if p.slice_point is None:
            if dim % tops:
                raise SetupError(f"axis {self.axis} has {dim} entries, which do not split "
                                 f"into {tops} equal parts; give slice_point",
                                 "slice_param.slice_point")
            points = [dim // tops * i for i in range(1, tops)]
        else:
            points = list(p.slice_point)
            if len(points) != tops - 1:
                raise SetupError(f"{len(points)} slice points make {len(points) + 1} pieces, "
                                 f"for {tops} tops", "slice_param.slice_point")
            if points != sorted(set(points)) or points[-1] >= dim:
                raise SetupError(f"must increase and stay below {dim} (the size of axis "
                                 f"{self.axis}), got {points}", "slice_param.slice_point")
        edges = [0, *points, dim]
        self.sizes = [b - a for a, b in zip(edges, edges[1:])]
        return [shape[:self.axis] + (s,) + shape[self.axis + 1:] for s in self.sizes]

    def forward(self, bottom):
        return self.xp.split(bottom[0], _boundaries(self.sizes), axis=self.axis)

    def backward(self, top_diff, propagate_down):
        return [self.xp.concatenate(top_diff, axis=self.axis) if propagate_down[0] else None]


@register("Split")
class Split(Layer):
    """One bottom to several tops (the same array). The net already sums the gradients
    of a blob read by several layers; this is Caffe's explicit form of that."""

    num_top = (1, MANY)

    def setup(self, bottom_shapes):
        return [tuple(bottom_shapes[0])] * len(self.spec.top)

    def forward(self, bottom):
        return [bottom[0]] * len(self.spec.top)

    def backward(self, top_diff, propagate_down):
        return [sum(top_diff[1:], top_diff[0].copy()) if propagate_down[0] else None]


@register("Eltwise")
class Eltwise(Layer):
    """Element-wise SUM (with one ``coeff`` per bottom), PROD or MAX of same-shape bottoms.

    MAX sends each gradient element to the first bottom holding the maximum there.
    (Caffe's CPU loop does the same except that it gives a tie between bottoms 0 and 1
    to bottom 1; one rule for every tie is simpler to explain and to test.)
    PROD's gradient for a bottom is the product of the others (``stable_prod_grad``),
    or ``top / bottom`` (undefined where the bottom is 0).
    """

    param_blocks = ("eltwise_param",)
    num_bottom = (2, MANY)

    def setup(self, bottom_shapes):
        first = tuple(bottom_shapes[0])
        for i, shape in enumerate(bottom_shapes[1:], 1):
            if tuple(shape) != first:
                raise SetupError(f"bottom {i} has shape {tuple(shape)}, bottom 0 {first}: they "
                                 "must be the same", "bottom")
        p = self.param("eltwise_param")
        self.op = p.operation
        if p.coeff is not None:
            if self.op != "SUM":
                raise SetupError(f"coeff is only for operation SUM (this is {self.op})",
                                 "eltwise_param.coeff")
            if len(p.coeff) != len(bottom_shapes):
                raise SetupError(f"needs one coefficient per bottom ({len(bottom_shapes)}), got "
                                 f"{len(p.coeff)}", "eltwise_param.coeff")
        self.coeff = tuple(p.coeff or (1.0,) * len(bottom_shapes))
        self.stable = p.stable_prod_grad
        return [first]

    def forward(self, bottom):
        xp = self.xp
        t = bottom[0].dtype.type
        if self.op == "SUM":
            y = self.buffer("y", bottom[0].shape, np.result_type(*(b.dtype for b in bottom)))
            flat = [y.reshape(-1)] + [x.reshape(-1) for x in bottom]

            def elements(s: slice) -> None:
                ys = flat[0][s]
                if self.coeff[:2] == (1.0, 1.0):
                    xp.add(flat[1][s], flat[2][s], out=ys)    # the usual case: one pass
                    rest = zip(self.coeff[2:], flat[3:])
                else:
                    xp.multiply(flat[1][s], t(self.coeff[0]), out=ys)
                    rest = zip(self.coeff[1:], flat[2:])
                for c, x in rest:
                    ys += x[s] * t(c) if c != 1 else x[s]
            over_slices(y.size, elements, y.size * len(bottom))
        elif self.op == "PROD":
            y = math.prod(bottom[1:], start=bottom[0])
        else:
            y = bottom[0].copy()
            self.argmax = xp.zeros(y.shape, np.int32)
            for i, x in enumerate(bottom[1:], 1):
                # Strictly greater: on a tie the earlier bottom keeps the gradient.
                higher = x > y
                xp.copyto(y, x, where=higher)
                self.argmax[higher] = i
        self.bottom, self.y = bottom, y
        return [y]

    def backward(self, top_diff, propagate_down):
        (dy,) = top_diff
        t = dy.dtype.type
        out = []
        for i, want in enumerate(propagate_down):
            if not want:
                out.append(None)
            elif self.op == "SUM" and self.coeff[i] == 1:
                out.append(dy)        # passed on as it is, as Bias does
            elif self.op == "SUM":
                dx = self.buffer(f"dx{i}", dy.shape, dy.dtype)
                out.append(ufunc_over_batch(self.xp.multiply, dx, dy, t(self.coeff[i])))
            elif self.op == "MAX":
                out.append(dy * (self.argmax == i))
            elif self.stable:
                others = [x for k, x in enumerate(self.bottom) if k != i]
                out.append(dy * math.prod(others[1:], start=others[0]))
            else:
                out.append(dy * self.y / self.bottom[i])
        return out


@register("Reshape")
class Reshape(Layer):
    """New dimensions for axes ``axis`` .. ``axis + num_axes`` of the bottom (no copy).
    In ``shape``, 0 copies the bottom's dimension at that place and one -1 is inferred."""

    param_blocks = ("reshape_param",)

    def setup(self, bottom_shapes):
        (shape,) = bottom_shapes
        p = self.param("reshape_param")
        if len(p.shape) != 1:
            raise SetupError(f"takes one shape, got {len(p.shape)}", "reshape_param.shape")
        ndim = len(shape)
        # Caffe counts a negative axis from one past the end: -1 appends.
        start = p.axis if p.axis >= 0 else ndim + p.axis + 1
        if not 0 <= start <= ndim:
            raise SetupError(f"axis {p.axis} is out of range for a {ndim}-D bottom",
                             "reshape_param.axis")
        end = ndim if p.num_axes == -1 else start + p.num_axes
        if end > ndim:
            raise SetupError(f"axis {p.axis} with num_axes {p.num_axes} extends past the "
                             f"bottom's {ndim} axes", "reshape_param.num_axes")
        dims = p.shape[0]
        if dims.count(-1) > 1:
            raise SetupError("at most one dimension may be -1 (inferred)", "reshape_param.shape")
        for i, d in enumerate(dims):
            if d == 0 and start + i >= ndim:
                raise SetupError(f"dim {i} is 0 (copy), but the bottom has no axis {start + i}",
                                 "reshape_param.shape")
        self.start, self.end, self.dims = start, end, dims
        return [self._top_shape(tuple(shape))]

    def _top_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The top's shape for a bottom of ``shape`` (the batch may change between runs)."""
        start, end = self.start, self.end
        dims = [shape[start + i] if d == 0 else d for i, d in enumerate(self.dims)]
        replaced = math.prod(shape[start:end])
        known = math.prod(d for d in dims if d != -1)
        if -1 in dims:
            if known == 0 or replaced % known:
                raise SetupError(f"cannot infer the -1: {replaced} values do not divide by "
                                 f"{known}", "reshape_param.shape")
            dims[dims.index(-1)] = replaced // known
        elif known != replaced:
            raise SetupError(f"shape {tuple(dims)} holds {known} values, the axes it replaces "
                             f"{shape[start:end]} hold {replaced}", "reshape_param.shape")
        return shape[:start] + tuple(dims) + shape[end:]

    def forward(self, bottom):
        (x,) = bottom
        self.x_shape = x.shape
        return [x.reshape(self._top_shape(x.shape))]

    def backward(self, top_diff, propagate_down):
        return [top_diff[0].reshape(self.x_shape) if propagate_down[0] else None]


@register("Crop")
class Crop(Layer):
    """Cut bottom 0 down to bottom 1's shape on axes ``axis`` and after, starting at
    ``offset`` (one for all those axes or one each). Bottom 1 only gives the shape:
    it gets no gradient."""

    param_blocks = ("crop_param",)
    num_bottom = (2, 2)

    def setup(self, bottom_shapes):
        shape, like = (tuple(s) for s in bottom_shapes)
        if len(shape) != len(like):
            raise SetupError(f"bottom 0 has {len(shape)} axes, bottom 1 {len(like)}", "bottom")
        p = self.param("crop_param")
        axis = canonical_axis(p.axis, len(shape), "crop_param.axis")
        cropped = len(shape) - axis
        offsets = list(p.offset or (0,))
        if len(offsets) == 1:
            offsets *= cropped
        elif len(offsets) != cropped:
            raise SetupError(f"gives {len(offsets)} offsets for the {cropped} axes from axis "
                             f"{axis}: give one, or one per axis", "crop_param.offset")
        self.index = [slice(None)] * axis
        for k, off in enumerate(offsets):
            i = axis + k
            if off + like[i] > shape[i]:
                raise SetupError(f"axis {i}: offset {off} + size {like[i]} exceeds bottom 0's "
                                 f"{shape[i]}", "crop_param.offset")
            self.index.append(slice(off, off + like[i]))
        self.index = tuple(self.index)
        return [shape[:axis] + like[axis:]]

    def forward(self, bottom):
        self.x_shape, self.like_shape = bottom[0].shape, bottom[1].shape
        return [bottom[0][self.index]]

    def backward(self, top_diff, propagate_down):
        dx = None
        if propagate_down[0]:
            dx = self.xp.zeros(self.x_shape, top_diff[0].dtype)
            dx[self.index] = top_diff[0]
        # Bottom 1 only lends its shape: its gradient is zero.
        return [dx, self.xp.zeros(self.like_shape, top_diff[0].dtype) if propagate_down[1] else None]
