"""Caffe's layer interface: setup (shapes), forward, backward; and the type registry."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

import numpy as np

from cnntrain.backend import CPU, Device
from cnntrain.blob import Param, Statistic
from cnntrain.engine.workspace import Workspace

if TYPE_CHECKING:
    from cnntrain.config.specs import LayerSpec
    from cnntrain.distributed import Shard
    from cnntrain.rng import RngStreams


@dataclass
class BuildContext:
    """What every layer of one run shares: random streams, dtype, where the data lives."""

    rngs: "RngStreams"
    dtype: Any = np.float32
    data_dir: Path | None = None
    notify: Callable[[str], None] = print
    #: This process's rows of each TRAIN batch when several MPI processes share it.
    shard: "Shard | None" = None
    # TEST Data layers' preprocessing by layer name, as a snapshot stores it (used
    # instead of working it out from the dataset again).
    preprocessing: dict | None = None
    #: Where the arrays live; its ``xp`` is the array module every layer computes with.
    device: Device = CPU

Shape = tuple[int, ...]

LAYER_TYPES: dict[str, type["Layer"]] = {}


def register(type_name: str):
    """Class decorator: make a layer available under its Caffe type name."""

    def wrap(cls: type[Layer]) -> type[Layer]:
        if type_name in LAYER_TYPES:
            raise RuntimeError(f"layer type {type_name} registered twice")
        cls.type_name = type_name
        LAYER_TYPES[type_name] = cls
        return cls

    return wrap


class SetupError(Exception):
    """Raised by setup() for a config problem; the net adds the file, line and layer."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


# Caffe's limit on the values in one blob (INT_MAX). Checked before anything is
# allocated, so a config asking for a huge layer is an error, not a MemoryError (or
# an allocation the system grants lazily and then kills the process for).
MAX_BLOB_COUNT = 2 ** 31 - 1


def check_count(shape: Sequence[int], what: str, field: str | None = None) -> None:
    """Raise a SetupError when a blob of ``shape`` would exceed :data:`MAX_BLOB_COUNT`."""
    count = math.prod(shape)
    if count > MAX_BLOB_COUNT:
        dims = "x".join(str(d) for d in shape)
        raise SetupError(f"{what} would hold {count:.3g} values ({dims}), more than the "
                         f"{MAX_BLOB_COUNT} one blob may hold", field)


class Layer:
    """One node of the net.

    Subclasses set ``param_blocks`` (the ``*_param`` blocks they read) and bottom/top
    counts, and implement ``setup``, ``forward`` and ``backward``. Parameters live in
    ``self.blobs`` as :class:`Param` objects; backward *adds* their gradients to ``.diff``.

    As in Caffe, the arrays a layer returns (tops, bottom diffs) may be its own buffers,
    refilled by its next forward or backward: copy one to keep it past that.
    """

    type_name: ClassVar[str] = ""
    param_blocks: ClassVar[tuple[str, ...]] = ()
    num_bottom: ClassVar[tuple[int, int]] = (1, 1)   # (min, max) bottoms
    num_top: ClassVar[tuple[int, int]] = (1, 1)
    is_loss: ClassVar[bool] = False                   # has a default loss_weight of 1
    in_place_ok: ClassVar[bool] = False               # may write its top over its bottom
    takes_class_labels: ClassVar[bool] = False        # bottoms: scores (classes on
                                                      # ``self.axis``), class labels

    def __init__(self, spec: "LayerSpec", phase: str, ctx: BuildContext):
        self.spec = spec
        self.name = spec.name
        self.phase = phase
        self.ctx = ctx
        self.rngs = ctx.rngs
        self.dtype = np.dtype(ctx.dtype)
        self.device = ctx.device
        #: The array module of this run's device: ``numpy``, or ``cupy`` on a GPU.
        self.xp = ctx.device.xp
        self.blobs: list[Param] = []
        self.shared: dict[str, Param] = {}   # the net's parameters by key (set by the net)
        #: Scratch and output buffers kept between steps (see :meth:`buffer`).
        self.ws = Workspace(self.xp)

    def default_loss_weight(self, top_index: int) -> float:
        """The weight of top ``top_index`` in the loss when ``loss_weight`` is not given:
        1 for a loss layer's first top (Caffe's rule), else 0."""
        return 1.0 if (self.is_loss and top_index == 0) else 0.0

    def param(self, block: str) -> Any:
        """The validated ``*_param`` block (attribute access, defaults filled in)."""
        return self.spec.blocks[block]

    # --- the interface -------------------------------------------------------------
    def setup(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        """Check the bottom shapes, create parameters, and return the top shapes."""
        raise NotImplementedError

    def reshape(self, bottom_shapes: Sequence[Shape]) -> None:
        """Caffe's Reshape: rebuild what depends on the bottoms' shapes (buffers, plans).

        A layer that has such things calls this at the end of its ``setup``; the net
        calls it again whenever a bottom's shape changes. Most layers read the shapes
        off their bottoms in ``forward`` and have nothing to rebuild."""

    def forward(self, bottom: Sequence[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def backward(self, top_diff: Sequence[np.ndarray],
                 propagate_down: Sequence[bool]) -> list[np.ndarray | None]:
        """Return bottom diffs (None where not wanted) and add to each ``blob.diff``."""
        raise NotImplementedError

    # --- helpers -------------------------------------------------------------------
    def buffer(self, name: str, shape: Shape, dtype: Any) -> np.ndarray:
        """This layer's array ``name``, kept from step to step: for what it fills every
        step and hands on (a top, a bottom diff, a mask its backward reads).

        A fresh ``np.empty`` of a few MB goes back to the system when freed and is
        faulted in again on the next step: about 1,900 page faults and 17 ms of system
        time per cifar10_quick step (batch 100) before these buffers; about 150 after.
        Contents are undefined until written.
        """
        return self.ws.get(name, shape, dtype)

    def param_key(self, index: int) -> str:
        """Parameters are shared by key: ``param[i].name`` if given, else ``layer/i``."""
        specs = self.spec.param_specs
        named = index < len(specs) and specs[index].name
        return named or f"{self.name}/{index}"

    def make_param(self, shape: Shape, filler: Any, index: int, fan_in: int, fan_out: int) -> Param:
        """Parameter ``index``: the shared one if the net already has its key (the TEST
        net reuses the TRAIN net's), else new and drawn from the "init" stream."""
        from cnntrain.fillers import fill

        key = self.param_key(index)
        owner = self._shared_param(key, shape, statistic=False)
        if owner is not None:
            return owner
        spec = self.spec.param_specs[index] if index < len(self.spec.param_specs) else None
        check_count(shape, f"parameter {index}")
        with np.errstate(over="ignore", invalid="ignore"):
            data = fill(filler, shape, fan_in, fan_out, self.rngs.get("init"), self.dtype)
        if not np.all(np.isfinite(data)):
            raise SetupError(f"the {filler['type']} filler of parameter {index} gives values "
                             f"beyond {self.dtype.name} (inf or nan)", "param")
        # Drawn on the host from the run's seed, then moved: the same initial weights
        # on every device.
        param = Param(self.device.to_device(data), lr_mult=spec.lr_mult if spec else 1.0,
                      decay_mult=spec.decay_mult if spec else 1.0, name=key,
                      freeze_iter=spec.freeze_iter if spec else None)
        self.shared[key] = param
        return param

    def make_statistic(self, shape: Shape, index: int) -> Statistic:
        """Parameter ``index`` as a running statistic (zeros at first): shared by key and
        saved like a parameter, never updated by a solver (see :class:`Statistic`)."""
        key = self.param_key(index)
        owner = self._shared_param(key, shape, statistic=True)
        if owner is not None:
            return owner
        stat = Statistic(self.xp.zeros(shape, self.dtype), name=key)
        self.shared[key] = stat
        return stat

    def _shared_param(self, key: str, shape: Shape, statistic: bool) -> Param | None:
        """The net's parameter ``key`` if there is one, checked to fit this layer."""
        owner = self.shared.get(key)
        if owner is None:
            return None
        if owner.data.shape != tuple(shape):
            raise SetupError(f"shared parameter '{key}' has shape {owner.data.shape}, "
                             f"this layer needs {tuple(shape)}", "param")
        if isinstance(owner, Statistic) != statistic:
            what = "running statistic" if statistic else "learned parameter"
            raise SetupError(f"shared parameter '{key}' cannot be both a learned parameter "
                             f"and a running statistic (this layer needs a {what})", "param")
        return owner

    def extra_state(self) -> dict[str, np.ndarray]:
        """Arrays other than parameters that a snapshot must keep (e.g. data cursors)."""
        return {}

    def load_extra_state(self, state: dict[str, np.ndarray]) -> None:
        pass
