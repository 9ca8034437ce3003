#!/usr/bin/env python3
"""One training step (forward + backward + SGD update) of the same net in cnntrain and
in PyTorch (CPU), timed alternately in one process.

    python bench/compare_torch.py configs/cifar10_quick.yaml --batch 100 --threads 2

Before timing, both sides get the same weights (copied from the cnntrain net into
torch) and the same input batch, and the script checks that every blob of the forward
pass, the loss and every parameter gradient agree to a float32 tolerance. Timing then
alternates the two sides in blocks of ``--block`` steps (ABBA order over rounds; the
first step of each block is untimed, see below) and reports per-side medians and the
ratio cnntrain / torch. PyTorch is imported here only; cnntrain never needs it.

Threads are set before NumPy is imported: ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` to
``--threads`` (torch's OpenMP and MKL, and cnntrain's own workers), plus
``torch.set_num_threads``. cnntrain then keeps OpenBLAS on one thread, as it always
does; ``--blas-threads N`` gives OpenBLAS N threads instead (cnntrain then runs no
workers of its own, as when a user sets ``OPENBLAS_NUM_THREADS``).

``--device gpu`` times both sides on the first NVIDIA GPU instead: cnntrain through
CuPy (``--device gpu``, the extra ``gpu``), PyTorch on ``cuda``, each step ending when
its device's queue has drained. The equivalence check still runs on the CPU (float64
needs no GPU); both timed nets start from the checked weights.
"""
from __future__ import annotations

import os
import sys


# --- thread pools: must happen before numpy (OpenBLAS) or torch (OpenMP) is loaded ----
def _early_option(argv: list[str], name: str, default: int | None) -> int | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith(name + "="):
            return int(arg.split("=", 1)[1])
    return default


_THREADS = _early_option(sys.argv[1:], "--threads", 2)
_BLAS_THREADS = _early_option(sys.argv[1:], "--blas-threads", None)
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_ENV_BEFORE = {v: os.environ.get(v) for v in _THREAD_VARS}
os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(_THREADS)
os.environ.pop("OPENBLAS_NUM_THREADS", None)
if _BLAS_THREADS is not None:
    os.environ["OPENBLAS_NUM_THREADS"] = str(_BLAS_THREADS)
_NUMPY_PRELOADED = "numpy" in sys.modules   # only when imported, not run as a script
import cnntrain  # noqa: E402  (before NumPy: it sets OpenBLAS's threads)

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import yaml  # noqa: E402

try:
    import torch  # noqa: E402
    import torch.nn.functional as F  # noqa: E402
except ImportError:  # pragma: no cover
    sys.exit("compare_torch.py needs PyTorch (CPU build); see bench/README.md "
             "(pip install -r bench/requirements.txt in a separate venv)")

from cnntrain.backend import CPU, to_host  # noqa: E402
from cnntrain.config.validate import load_experiment, parse_net  # noqa: E402
from cnntrain.errors import CnnTrainError  # noqa: E402
from cnntrain.layers import BuildContext  # noqa: E402
from cnntrain.layers.geometry import pair  # noqa: E402
from cnntrain.net import Net  # noqa: E402
from cnntrain.rng import RngStreams  # noqa: E402
from cnntrain.solvers import make_solver  # noqa: E402

# Image shape of each dataset a Data layer can name (C, H, W).
DATASET_SHAPES = {"cifar10": (3, 32, 32), "cifar100": (3, 32, 32)}


class BenchError(Exception):
    """A problem with the config or a mismatch between the two sides: one line."""


# --- the net with a fixed input batch ------------------------------------------------
def _read_net_raw(config: Path) -> dict:
    raw = yaml.safe_load(config.read_text())
    net_raw = raw["net"]
    if isinstance(net_raw, str):           # net: path/to/net.yaml (relative to the config)
        net_raw = yaml.safe_load((config.parent / net_raw).read_text())
        if isinstance(net_raw, dict) and set(net_raw) == {"net"}:
            net_raw = net_raw["net"]
    return net_raw


def bench_net_dict(config: Path, batch: int | None) -> tuple[dict, int, tuple[int, ...]]:
    """The TRAIN net of ``config`` with its Data layer replaced by an Input layer.

    Returns (raw net dict, batch size, image shape (C, H, W)). Layers not in the TRAIN
    phase are dropped. ``batch`` None keeps the Data layer's batch_size.
    """
    net_raw = _read_net_raw(config)
    spec = parse_net(net_raw, str(config))       # validates and resolves phases
    layers, batch_used, image_shape, has_input = [], None, None, False
    for raw_layer, layer_spec in zip(net_raw["layer"], spec.layers):
        if not layer_spec.in_phase("TRAIN"):
            continue
        raw_layer = dict(raw_layer)
        if layer_spec.type == "Data":
            if image_shape is not None:
                raise BenchError("more than one Data layer in the TRAIN phase")
            dp, tp = layer_spec.blocks["data_param"], layer_spec.blocks["transform_param"]
            c, h, w = DATASET_SHAPES[dp.dataset or "cifar10"]
            if tp.crop_size:
                h = w = tp.crop_size
            image_shape = (c, h, w)
            batch_used = batch or dp.batch_size
            shapes = [{"dim": [batch_used, c, h, w]}]
            if len(layer_spec.top) > 1:
                shapes.append({"dim": [batch_used]})
            raw_layer = {"name": layer_spec.name, "type": "Input", "top": list(layer_spec.top),
                         "input_param": {"shape": shapes},
                         "_bench_scale": tp.scale}
        elif layer_spec.type == "Input":
            has_input = True
            shapes = [dict(s) for s in raw_layer["input_param"]["shape"]] \
                if isinstance(raw_layer["input_param"]["shape"], list) \
                else [dict(raw_layer["input_param"]["shape"])]
            if batch:
                for s in shapes:
                    s["dim"] = [batch] + list(s["dim"][1:])
            batch_used = shapes[0]["dim"][0]
            image_shape = tuple(shapes[0]["dim"][1:])
            raw_layer["input_param"] = {"shape": shapes}
        layers.append(raw_layer)
    if image_shape is None and not has_input:
        raise BenchError("the TRAIN net has no Data or Input layer to feed")
    return {"name": net_raw.get("name", "net"), "layer": layers}, batch_used, image_shape


def build_cnntrain(config: Path, batch: int | None, seed: int, device=CPU):
    net_raw, batch, _ = bench_net_dict(config, batch)
    scales = {l["name"]: l.pop("_bench_scale", 1.0) for l in net_raw["layer"]}
    exp = load_experiment(config)                # the solver values (and a full validation)
    spec = parse_net(net_raw, f"{config} (bench: Data -> Input)")
    net = Net(spec, "TRAIN", BuildContext(RngStreams(seed), np.float32, device=device))
    inputs = [n for n in net.nodes if n.layer.spec.type == "Input"]
    if len(inputs) != 1:
        raise BenchError(f"expected one Input layer in the bench net, found {len(inputs)}")
    in_node = inputs[0]
    loss_nodes = [n for n in net.nodes if any(n.loss_weights)]
    if not loss_nodes:
        raise BenchError("the TRAIN net has no loss layer")
    # Fill a fixed batch: pixels like a mean-subtracted, scaled CIFAR batch; labels 0..C-1.
    rng = np.random.default_rng(seed)
    layer = in_node.layer
    scale = scales.get(layer.name, 1.0)
    layer.values[0][...] = (rng.integers(0, 256, layer.values[0].shape) - 127.5) * scale
    if len(layer.values) > 1:
        scores_shape = net.shapes[loss_nodes[0].bottoms[0]]
        classes = scores_shape[1] if len(scores_shape) > 1 else 2
        layer.values[1][...] = rng.integers(0, classes, layer.values[1].shape).astype(np.float32)
    solver = make_solver(exp.solver.values, net.params)
    return exp, net, solver, in_node, batch


def cnntrain_step(net, solver) -> float:
    net.clear_param_diffs()
    loss = net.forward()
    net.backward()
    solver.apply_update()
    return loss


# --- the same graph in torch ---------------------------------------------------------
SUPPORTED = ("Input", "Convolution", "Pooling", "ReLU", "Sigmoid", "TanH", "Dropout",
             "InnerProduct", "Flatten", "Softmax", "SoftmaxWithLoss", "EuclideanLoss",
             "Accuracy", "BatchNorm", "Scale", "Bias", "Eltwise", "GELU", "Power")
# Producers whose backward does not need their own output: a ReLU may overwrite it.
_INPLACE_SAFE_PRODUCERS = {"Convolution", "InnerProduct", "Pooling", "BatchNorm", "Scale",
                           "Bias", "Eltwise"}


class TorchNet(torch.nn.Module):
    """cnntrain's TRAIN graph (``net.nodes``, same versioned blob ids and loss weights)
    run by torch.nn.functional ops. Parameters are copies of the cnntrain ``Param``s,
    shared where cnntrain shares them.
    """

    def __init__(self, net: Net, inplace: bool = True):
        super().__init__()
        self.params = torch.nn.ParameterList()
        self.param_of: dict[int, int] = {}       # id(cnntrain Param) -> index in self.params
        self.cnn_params = []
        for _, _, p in net.param_keys:
            self.param_of[id(p)] = len(self.params)
            self.params.append(torch.nn.Parameter(torch.from_numpy(to_host(p.data).copy())))
            self.cnn_params.append(p)
        producer = {t: n.layer.spec.type for n in net.nodes for t in n.tops}
        consumers: dict[str, int] = {}
        for n in net.nodes:
            for b in n.bottoms:
                consumers[b] = consumers.get(b, 0) + 1
        self.input_ids: list[str] = []
        self.ops = []
        for node in net.nodes:
            t = node.layer.spec.type
            if t not in SUPPORTED:
                raise BenchError(f"layer '{node.layer.name}': type {t} has no torch "
                                 f"translation (supported: {', '.join(SUPPORTED)})")
            if t == "Input":
                self.input_ids.extend(node.tops)
                continue
            safe = (inplace and t == "ReLU" and consumers.get(node.bottoms[0]) == 1
                    and producer.get(node.bottoms[0]) in _INPLACE_SAFE_PRODUCERS)
            self.ops.append((node, self._translate(node, safe)))
        self.loss_tops = [(top, w) for node in net.nodes
                          for top, w in zip(node.tops, node.loss_weights) if w]

    def _p(self, param):
        return self.params[self.param_of[id(param)]]

    def _translate(self, node, inplace: bool):
        spec, layer = node.layer.spec, node.layer
        t, name = spec.type, layer.name
        blobs = [self._p(p) for p in layer.blobs]
        bias = blobs[1] if len(blobs) > 1 else None
        if t == "Convolution":
            p = spec.blocks["convolution_param"]
            stride = pair(p, "convolution_param", "stride", 1)
            pad = pair(p, "convolution_param", "pad", 0)
            w, g = blobs[0], p.group
            return lambda x: [F.conv2d(x[0], w, bias, stride=stride, padding=pad, groups=g)]
        if t == "Pooling":
            p = spec.blocks["pooling_param"]
            if p.global_pooling:
                if p.pool == "MAX":
                    return lambda x: [F.adaptive_max_pool2d(x[0], 1)]
                return lambda x: [F.adaptive_avg_pool2d(x[0], 1)]
            k = pair(p, "pooling_param", "kernel", None)
            s = pair(p, "pooling_param", "stride", 1)
            pad = pair(p, "pooling_param", "pad", 0)
            if pad[0] > k[0] // 2 or pad[1] > k[1] // 2:
                raise BenchError(f"layer '{name}': torch pooling needs pad <= kernel/2, got "
                                 f"pad {pad} for kernel {k}")
            ceil = p.round_mode == "CEIL"
            if p.pool == "MAX":
                return lambda x: [F.max_pool2d(x[0], k, s, pad, ceil_mode=ceil)]
            # Caffe's divisor counts the padding but not the ceil-mode overhang past it:
            # torch's count_include_pad=True divisor is (min(start+k, size+pad) - start),
            # the same rule (checked blob by blob before timing).
            return lambda x: [F.avg_pool2d(x[0], k, s, pad, ceil_mode=ceil,
                                           count_include_pad=True)]
        if t == "BatchNorm":
            if layer.global_stats:
                raise BenchError(f"layer '{name}': only BatchNorm with batch statistics "
                                 "(the TRAIN default) is translated")
            p = spec.blocks["batch_norm_param"]
            # torch keeps its own running statistics: same work per step, other formula
            # (the check compares outputs, which use the batch's statistics only).
            dtype = torch.from_numpy(layer.blobs[0].data).dtype
            running = (torch.zeros(layer.channels, dtype=dtype),
                       torch.ones(layer.channels, dtype=dtype))
            return lambda x: [F.batch_norm(x[0], *running, training=True,
                                           momentum=1 - p.moving_average_fraction, eps=p.eps)]
        if t == "Scale":
            if len(node.bottoms) != 1 or blobs[0].dim() != 1 or layer.axis != 1:
                raise BenchError(f"layer '{name}': only a learned per-channel Scale (axis 1) "
                                 "is translated")
            scale, shift = blobs[0], (blobs[1] if len(blobs) > 1 else None)

            def per_channel(x):
                shape = (1, -1) + (1,) * (x[0].dim() - 2)
                y = x[0] * scale.view(shape)
                return [y + shift.view(shape) if shift is not None else y]
            return per_channel
        if t == "Bias":
            if len(node.bottoms) != 1 or blobs[0].dim() != 1 or layer.axis != 1:
                raise BenchError(f"layer '{name}': only a learned per-channel Bias (axis 1) "
                                 "is translated")
            shift = blobs[0]
            return lambda x: [x[0] + shift.view((1, -1) + (1,) * (x[0].dim() - 2))]
        if t == "GELU":
            approximate = spec.blocks["gelu_param"].approximate
            return lambda x: [F.gelu(x[0], approximate=approximate)]
        if t == "Power":
            pp = spec.blocks["power_param"]
            if pp.power != 1:
                raise BenchError(f"layer '{name}': only Power with power 1 is translated")
            return lambda x: [x[0] * pp.scale + pp.shift if pp.shift else x[0] * pp.scale]
        if t == "Eltwise":
            if layer.op != "SUM":
                raise BenchError(f"layer '{name}': only Eltwise SUM is translated")
            coeff = layer.coeff
            return lambda x: [sum(c * v if c != 1 else v for c, v in zip(coeff, x))]
        if t == "ReLU":
            slope = spec.blocks["relu_param"].negative_slope
            if slope:
                return lambda x: [F.leaky_relu(x[0], slope, inplace=inplace)]
            return lambda x: [F.relu(x[0], inplace=inplace)]
        if t == "Sigmoid":
            return lambda x: [torch.sigmoid(x[0])]
        if t == "TanH":
            return lambda x: [torch.tanh(x[0])]
        if t == "Dropout":
            ratio = spec.blocks["dropout_param"].dropout_ratio

            def dropout(x, masks=None):
                if masks is not None and name in masks:       # the check: cnntrain's mask
                    return [x[0] * masks[name]]
                return [F.dropout(x[0], ratio, training=True)]
            dropout.takes_masks = True
            return dropout
        if t == "InnerProduct":
            axis = layer.axis
            w = blobs[0]
            return lambda x: [F.linear(x[0].flatten(axis), w, bias)]
        if t == "Flatten":
            a, b = layer.a, layer.b
            return lambda x: [x[0].flatten(a, b)]
        if t == "Softmax":
            axis = layer.axis
            return lambda x: [torch.softmax(x[0], axis)]
        if t == "SoftmaxWithLoss":
            axis, ignore, norm = layer.axis, layer.ignore, layer.normalization
            want_prob = len(node.tops) > 1

            def softmax_loss(x):
                scores, label = x
                if axis != 1:
                    scores = scores.movedim(axis, 1)
                lab = label.reshape(scores.shape[:1] + scores.shape[2:]).long()
                kw = {} if ignore is None else {"ignore_index": ignore}
                if layer.smoothing:
                    kw["label_smoothing"] = layer.smoothing
                if norm == "VALID":
                    loss = F.cross_entropy(scores, lab, **kw)
                else:
                    total = F.cross_entropy(scores, lab, reduction="sum", **kw)
                    d = {"BATCH_SIZE": scores.shape[0], "FULL": lab.numel(), "NONE": 1}[norm]
                    loss = total / d
                out = [loss]
                if want_prob:
                    out.append(torch.softmax(x[0], axis))
                return out
            return softmax_loss
        if t == "EuclideanLoss":
            return lambda x: [((x[0] - x[1].reshape(x[0].shape)) ** 2).sum() / (2 * x[0].shape[0])]
        if t == "Accuracy":
            axis, k, ignore = layer.axis, layer.top_k, layer.ignore
            if len(node.tops) > 1:
                raise BenchError(f"layer '{name}': per-class Accuracy top not translated")

            def accuracy(x):
                with torch.no_grad():
                    rows = x[0].movedim(axis, -1).reshape(-1, x[0].shape[axis])
                    lab = x[1].reshape(-1).long()
                    valid = lab != ignore if ignore is not None else torch.ones_like(lab, dtype=torch.bool)
                    target = rows.gather(1, torch.where(valid, lab, 0)[:, None])
                    hit = ((rows > target).sum(1) < k) & valid
                    return [hit.sum() / valid.sum().clamp(min=1)]
            return accuracy
        raise AssertionError(t)

    def forward(self, inputs: dict[str, torch.Tensor], keep: bool = False, masks=None):
        """Returns (weighted loss, blobs by id if ``keep``)."""
        blobs = dict(inputs)
        for node, fn in self.ops:
            bottoms = [blobs[b] for b in node.bottoms]
            tops = fn(bottoms, masks) if getattr(fn, "takes_masks", False) else fn(bottoms)
            for top_id, value in zip(node.tops, tops):
                blobs[top_id] = value
        loss = sum(w * blobs[top] for top, w in self.loss_tops)
        return loss, (blobs if keep else None)


def make_torch_optimizer(tnet: TorchNet, solver) -> tuple[torch.optim.Optimizer, str]:
    """The torch optimizer closest to cnntrain's solver, for timing: one group per
    parameter with ``lr·lr_mult`` and ``weight_decay·decay_mult``, a fixed lr (the
    policy's rate at iteration 0). Update rules differ in details (Caffe's SGD puts the
    lr inside the momentum buffer: v = μv + lr·g, w -= v; torch's: v = μv + g,
    w -= lr·v), so the work is the same but the weights after some steps are not."""
    s, lr = solver.s, solver.rate()
    kind = s.type
    mom = getattr(solver, "momentum", None)
    mom = s.get("momentum") if mom is None else mom
    decoupled = s.get("weight_decay_mode", "coupled") == "decoupled"
    groups = []
    for tp, p in zip(tnet.params, tnet.cnn_params):
        if p.lr_mult == 0:
            continue
        groups.append({"params": [tp], "lr": lr * p.lr_mult,
                       "weight_decay": (s.weight_decay or 0.0) * p.decay_mult})
    eps = s.get("delta") or 1e-8
    if kind in ("SGD", "Nesterov"):
        m = mom if mom is not None else 0.0
        opt = torch.optim.SGD(groups, lr=lr, momentum=m, nesterov=kind == "Nesterov" and m > 0)
    elif kind == "Adam":
        beta1 = mom if mom is not None else 0.9
        cls = torch.optim.AdamW if decoupled else torch.optim.Adam
        opt = cls(groups, lr=lr, betas=(beta1, s.get("momentum2") or 0.999), eps=eps)
    elif kind == "AdaGrad":
        opt = torch.optim.Adagrad(groups, lr=lr, eps=eps)
    elif kind == "RMSProp":
        opt = torch.optim.RMSprop(groups, lr=lr, alpha=s.get("rms_decay") or 0.99, eps=eps)
    elif kind == "AdaDelta":
        opt = torch.optim.Adadelta(groups, lr=lr, rho=mom if mom is not None else 0.95, eps=eps)
    else:
        raise BenchError(f"solver type {kind} has no torch counterpart here")
    notes = []
    if s.get("regularization_type", "L2") != "L2" and s.weight_decay:
        notes.append("L1 decay timed as L2")
    if decoupled and kind != "Adam" and s.weight_decay:
        notes.append("decoupled decay timed as coupled")
    if (s.get("iter_size") or 1) > 1:
        notes.append("iter_size ignored: one forward/backward per update on both sides")
    nesterov = ", nesterov=True" if opt.defaults.get("nesterov") else ""
    desc = (f"{type(opt).__name__}(lr={lr:g}" + (f", momentum={mom:g}" if mom else "")
            + nesterov + ")")
    return opt, desc + (f"  [{'; '.join(notes)}]" if notes else "")


def torch_step(tnet, opt, inputs, clip: float = 0.0) -> torch.Tensor:
    opt.zero_grad(set_to_none=True)
    loss, _ = tnet(inputs)
    loss.backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(tnet.parameters(), clip)
    opt.step()
    return loss


# --- the check -----------------------------------------------------------------------
def _rel_err(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> tuple[float, bool]:
    """max |a-b| / max|b| and whether |a-b| <= atol*scale + rtol*|b| everywhere."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf"), False
    scale = max(float(np.abs(b).max()) if b.size else 0.0, 1e-30)
    diff = np.abs(a - b)
    ok = bool(np.all(diff <= atol * scale + rtol * np.abs(b)))
    return float(diff.max() / scale) if diff.size else 0.0, ok


def _dropout_masks(net) -> dict:
    """cnntrain's last Dropout masks by layer name, so torch drops the same units."""
    return {n.layer.name: torch.from_numpy(n.layer.mask) for n in net.nodes
            if n.layer.spec.type == "Dropout" and getattr(n.layer, "mask", None) is not None}


def compare_sides(net, tnet, inputs, rtol, atol) -> dict:
    """Forward + backward on both sides from the same weights and batch; compare every
    blob, the loss and every parameter gradient. Returns rows and the mismatches."""
    net.clear_param_diffs()
    loss_c = net.forward()
    net.backward()
    tnet.zero_grad(set_to_none=True)
    loss_t, blobs_t = tnet(inputs, keep=True, masks=_dropout_masks(net))
    loss_t.backward()
    rows = []

    def compare(kind, name, a, b):
        err, ok = _rel_err(a, b, rtol, atol)
        rows.append((kind, name, tuple(np.shape(a)), err, ok))

    for node, _ in tnet.ops:
        for top in node.tops:
            compare("blob", top, net.blobs[top], blobs_t[top].detach().numpy())
    compare("loss", "total", np.float64(loss_c), np.float64(loss_t.item()))
    for (layer, idx, p), tp in zip(net.param_keys, tnet.params):
        g = tp.grad.numpy() if tp.grad is not None else np.zeros_like(p.diff)
        compare("grad", f"{layer}[{idx}]", p.diff, g)
    return {"rows": rows, "loss_c": float(loss_c), "loss_t": float(loss_t.item()),
            "blobs_t": blobs_t,
            "bad": [f"{k} {n} (max err {e:.2e} of scale)" for k, n, _, e, ok in rows if not ok]}


def _print_rows(title, rows) -> None:
    print(f"{title}\n{'check':5} {'name':14} {'shape':18} {'max|d|/scale':>12}")
    for kind, name, shape, err, ok in rows:
        print(f"{kind:5} {name:14} {str(shape):18} {err:12.2e} {'' if ok else 'MISMATCH'}")


def maxpool_flips(net, tnet, blobs_t) -> int:
    """MAX-pooling windows whose (first) argmax differs between the two float32 forwards:
    a near-tie resolved differently routes that window's gradient to another pixel."""
    flips = 0
    for node, _ in tnet.ops:
        layer = node.layer
        if layer.spec.type != "Pooling" or layer.method != "MAX":
            continue
        geo = dict(kernel_size=(layer.kh, layer.kw), stride=(layer.sh, layer.sw),
                   padding=(layer.ph, layer.pw), ceil_mode=True, return_indices=True)
        _, ic = F.max_pool2d(torch.from_numpy(net.blobs[node.bottoms[0]]), **geo)
        _, it = F.max_pool2d(blobs_t[node.bottoms[0]].detach(), **geo)
        flips += int((ic != it).sum())
    return flips


def relu_flips(net, tnet, blobs_t) -> int:
    """ReLU inputs within float32 rounding of zero whose sign differs between the two
    forwards: such a unit passes its gradient on one side and blocks it on the other."""
    flips = 0
    for node, _ in tnet.ops:
        if node.layer.spec.type != "ReLU":
            continue
        x = node.bottoms[0]
        flips += int(((net.blobs[x] > 0) != (blobs_t[x].detach().numpy() > 0)).sum())
    return flips


def check_same(net, in_node, seed, rtol, atol, verbose) -> dict:
    """The equivalence check (before any update). Forward blobs and the loss must agree
    in float32. Gradients must agree in float32 too, unless the float32 difference is
    explained: then the same check in float64 (weights and batch copied from the float32
    net) must pass. A single MAX-pool window whose near-tied maximum is resolved
    differently moves that window's gradient to another pixel and changes the first
    conv's weight gradient by ~1e-3 of its scale; in float64 such ties vanish."""
    inputs = {top: torch.from_numpy(v.copy()) for top, v in zip(in_node.tops, in_node.layer.values)}
    res = compare_sides(net, TorchNet(net, inplace=False), inputs, rtol, atol)
    rows = res["rows"]
    if verbose:
        _print_rows("float32:", rows)
    bad_fwd = [b for b in res["bad"] if not b.startswith("grad")]
    if bad_fwd:
        raise BenchError("cnntrain and torch disagree (forward, float32): " + "; ".join(bad_fwd))
    note, f64_grad_err = None, None
    if res["bad"]:
        flips = maxpool_flips(net, TorchNet(net, inplace=False), res["blobs_t"])
        kinks = relu_flips(net, TorchNet(net, inplace=False), res["blobs_t"])
        net64 = Net(net.spec, "TRAIN", BuildContext(RngStreams(seed), np.float64))
        for p64, p32 in zip(net64.params, net.params):
            p64.data[...] = p32.data
        in64 = next(n for n in net64.nodes if n.layer is net64.layer(in_node.layer.name))
        for dst, src in zip(in64.layer.values, in_node.layer.values):
            dst[...] = src
        inputs64 = {top: torch.from_numpy(v.copy()) for top, v in zip(in64.tops, in64.layer.values)}
        res64 = compare_sides(net64, TorchNet(net64, inplace=False), inputs64, rtol, atol)
        if verbose:
            _print_rows("float64 (arbiter):", res64["rows"])
        if res64["bad"]:
            raise BenchError("cnntrain and torch disagree in float32 (" + "; ".join(res["bad"])
                             + ") and in float64 (" + "; ".join(res64["bad"]) + ")")
        f64_grad_err = max(e for k, _, _, e, _ in res64["rows"] if k == "grad")
        listed = "; ".join(res["bad"][:3]) + (f"; and {len(res['bad']) - 3} more"
                                                 if len(res["bad"]) > 3 else "")
        note = (f"float32 gradients differ beyond tolerance ({listed}); "
                f"{flips} MAX-pool window(s) resolve a near-tie to a different argmax in the "
                f"two float32 forwards; in float64 all gradients agree to {f64_grad_err:.1e}")
        note += (f"; {kinks} ReLU input(s) within rounding of zero take the other side of "
                 "the kink in the two float32 forwards")
        if not flips and not kinks:
            note += " (no argmax flip found: a float32 precision difference)"
    blob_err = {r[1]: r[3] for r in rows if r[0] == "blob"}
    scores = [n.bottoms[0] for n in net.nodes if any(n.loss_weights)]
    return {"loss_cnntrain": res["loss_c"], "loss_torch": res["loss_t"],
            "loss_err": next(r[3] for r in rows if r[0] == "loss"),
            "scores_err": max(blob_err[s] for s in scores),
            "max_blob_err": max(blob_err.values()),
            "max_grad_err": max(r[3] for r in rows if r[0] == "grad"),
            "max_grad_err_f64": f64_grad_err, "note": note, "rtol": rtol, "atol": atol}


# --- environment report --------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info() -> dict:
    info: dict = {}
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        info["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:                                    # older numpy: no mode="dicts"
        pass
    try:
        from threadpoolctl import threadpool_info
        info["threadpools"] = [
            {k: d.get(k) for k in ("internal_api", "num_threads", "version", "architecture",
                                   "threading_layer", "filepath")}
            for d in threadpool_info()]
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed"
    return info


def git_revision() -> str | None:
    """The checkout's commit (+ "-dirty" if cnntrain/ has local changes), if in git."""
    import subprocess
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                             capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "cnntrain"], cwd=root,
                               text=True, capture_output=True, check=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def steady_allocator(limit: int = 256 << 20) -> bool:
    """Keep freed memory in this process (glibc's malloc only): raise the mmap and trim
    thresholds, so that a tensor freed at the end of one step is reused by the next
    instead of going back to the system and being faulted in again, page by page.

    torch allocates its activations and gradients afresh every step. With glibc's
    defaults its step time depends on what the process allocated before: measured on
    cifar10_quick, fresh 113 ms with ~9,500 page faults per step, but 72-87 ms with 7
    once larger buffers had been freed (which the float64 check happens to do). Fixed
    thresholds give torch its fast state whether or not the check runs. cnntrain keeps
    its own buffers between steps and is not affected. Returns False where it cannot
    be set (not glibc)."""
    import ctypes
    import ctypes.util
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, limit)) and bool(mallopt(m_trim_threshold, limit))


def load_avg() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


# --- per-layer profile of cnntrain ---------------------------------------------------
def profile_cnntrain(net, solver, steps: int) -> tuple[list[tuple[str, float, float]],
                                                      dict[str, float]]:
    """Mean ms per step spent in each layer's forward and backward, and in the solver;
    and mean ms per step in the engine's kernels by kind (GEMM, im2col/col2im), as
    ``cnntrain time`` splits them."""
    from cnntrain.engine.accounting import kernel_time
    acc: dict[str, list[float]] = {}
    originals = []
    for node in net.nodes:
        layer = node.layer
        slot = acc.setdefault(f"{layer.name} ({layer.spec.type})", [0.0, 0.0])
        for which, attr in ((0, "forward"), (1, "backward")):
            orig = getattr(layer, attr)
            originals.append((layer, attr))

            def timed(*a, _orig=orig, _slot=slot, _w=which):
                t0 = time.perf_counter()
                try:
                    return _orig(*a)
                finally:
                    _slot[_w] += time.perf_counter() - t0
            setattr(layer, attr, timed)
    extra = {"clear_param_diffs": 0.0, "solver.apply_update": 0.0, "net overhead": 0.0}
    try:
        with kernel_time() as kernels:
            for _ in range(steps):
                t0 = time.perf_counter()
                net.clear_param_diffs()
                t1 = time.perf_counter()
                net.forward()
                net.backward()
                t2 = time.perf_counter()
                solver.apply_update()
                t3 = time.perf_counter()
                extra["clear_param_diffs"] += t1 - t0
                extra["solver.apply_update"] += t3 - t2
                extra["net overhead"] += t2 - t1
    finally:
        for layer, attr in originals:
            delattr(layer, attr)           # back to the class method
    extra["net overhead"] -= sum(f + b for f, b in acc.values())
    rows = [(name, f * 1e3 / steps, b * 1e3 / steps) for name, (f, b) in acc.items()]
    rows += [(name, v * 1e3 / steps, 0.0) for name, v in extra.items()]
    return rows, {kind: seconds * 1e3 / steps for kind, seconds in kernels.items()}


# --- main ----------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path)
    ap.add_argument("--batch", type=int, default=None,
                    help="batch size (default: the config's TRAIN Data batch_size)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per side")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per side first")
    ap.add_argument("--block", type=int, default=5,
                    help="timed steps per side before switching (each block starts with one "
                         "untimed step)")
    ap.add_argument("--threads", type=int, default=2,
                    help="threads for both sides (cnntrain's workers, torch's OpenMP and MKL)")
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="give OpenBLAS this many threads (and cnntrain no workers)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--atol", type=float, default=1e-5, help="relative to each array's max |x|")
    ap.add_argument("--no-check", action="store_true", help="skip the equivalence check")
    ap.add_argument("--verbose-check", action="store_true", help="print every compared array")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="also time cnntrain per layer over N steps and run torch's profiler")
    ap.add_argument("--json", action="store_true", help="print one JSON line with the results")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                    help="time both sides on the CPU, or on the first GPU (CuPy, cuda)")
    args = ap.parse_args(argv)
    if args.threads != _THREADS:
        raise BenchError("--threads was parsed differently early and late")
    if _NUMPY_PRELOADED:
        print("warning: numpy was imported before this module; the thread settings may "
              "not apply", file=sys.stderr)

    steady = steady_allocator()
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass

    exp, net, solver, in_node, batch = build_cnntrain(args.config, args.batch, args.seed)
    inputs = {top: torch.from_numpy(v.copy()) for top, v in zip(in_node.tops, in_node.layer.values)}

    print(f"config: {args.config}  net: {exp.net.name}  batch: {batch}  "
          f"input: {tuple(in_node.layer.values[0].shape)}")
    env_notes = []
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    if coretype:
        env_notes.append(f"OPENBLAS_CORETYPE={coretype} is set (forces an OpenBLAS kernel; "
                         "can slow numpy)")
    overridden = {k: v for k, v in _ENV_BEFORE.items()
                  if v is not None and v != os.environ.get(k)}
    if overridden:
        env_notes.append(f"overrode {overridden}")
    env_notes.append("malloc keeps freed memory (mmap/trim thresholds 256 MB), so torch's "
                     "per-step tensors are not page-faulted in every step" if steady else
                     "could not set malloc's thresholds (not glibc): torch's step time may "
                     "depend on earlier allocations")
    blas = blas_info()
    from cnntrain.engine.parallel import worker_count
    print(f"threads: {args.threads}  (OMP_NUM_THREADS=MKL_NUM_THREADS={_THREADS}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')} before numpy; "
          f"cnntrain workers {worker_count()}; "
          f"torch.set_num_threads({args.threads}) -> {torch.get_num_threads()})")
    if isinstance(blas.get("threadpools"), list):
        for tp in blas["threadpools"]:
            print(f"  threadpool: {tp['internal_api']} {tp.get('version') or ''} "
                  f"threads={tp['num_threads']} arch={tp.get('architecture')} "
                  f"({Path(tp['filepath']).name})")
    for note in env_notes:
        print(f"note: {note}")

    # The check: same weights, same batch, before any update.
    check = None
    if not args.no_check:
        check = check_same(net, in_node, args.seed, args.rtol, args.atol, args.verbose_check)
        print(f"check: OK  loss cnntrain {check['loss_cnntrain']:.6f} torch "
              f"{check['loss_torch']:.6f}  max err/scale: scores {check['scores_err']:.1e}, "
              f"blobs {check['max_blob_err']:.1e}, grads {check['max_grad_err']:.1e} "
              f"(rtol {args.rtol:g}, atol {args.atol:g}·scale)")
        if check["note"]:
            print(f"check note: {check['note']}")
    tnet = TorchNet(net, inplace=True)                # what is timed (in-place ReLU)
    if check is not None:
        # The timed graph (in-place ReLU) must give what the checked one gave.
        ref = TorchNet(net, inplace=False)
        for t in (ref, tnet):
            t.zero_grad(set_to_none=True)
            loss_t, _ = t(inputs, masks=_dropout_masks(net))
            loss_t.backward()
        for (layer, idx, _), a, b in zip(net.param_keys, tnet.params, ref.params):
            if (a.grad is None) != (b.grad is None) or (
                    a.grad is not None and not torch.equal(a.grad, b.grad)):
                raise BenchError(f"timed torch graph: grad {layer}[{idx}] differs from the "
                                 "checked graph")
    sync = {"cnntrain": lambda: None, "torch": lambda: None}
    if args.device == "gpu":
        # The timed pair on the GPU, from the weights just checked on the CPU (the same
        # seed draws them on the host for either device).
        from cnntrain.backend import open_device

        device = open_device("gpu")
        exp, net, solver, in_node, batch = build_cnntrain(args.config, args.batch, args.seed,
                                                          device)
        tnet = tnet.to("cuda")
        inputs = {k: v.to("cuda") for k, v in inputs.items()}
        sync = {"cnntrain": device.synchronize, "torch": torch.cuda.synchronize}
        print(f"device: cnntrain {device}, torch {torch.cuda.get_device_name(0)}")
    opt, opt_desc = make_torch_optimizer(tnet, solver)
    clip = exp.solver.values.get("clip_gradients") or 0.0
    print(f"solver: cnntrain {exp.solver.values.type}, torch {opt_desc}"
          + (f", clip_grad_norm {clip:g}" if clip else ""))

    # Timing: alternate the sides in blocks, in ABBA order over rounds so drift and order
    # effects are shared. The first step of each block is run but not timed: right after
    # the other side, its threads are still busy-waiting (OpenBLAS workers spin after a
    # GEMM; on 2 cores that slows the next torch step about 2x), which no real training
    # loop of either library would see.
    def cnntrain_side() -> float:
        loss = cnntrain_step(net, solver)
        sync["cnntrain"]()
        return loss

    def torch_side() -> float:
        loss = torch_step(tnet, opt, inputs, clip).item()    # .item() waits for the loss
        sync["torch"]()
        return loss

    sides = {"cnntrain": cnntrain_side, "torch": torch_side}
    times = {k: [] for k in sides}
    losses = {k: [] for k in sides}
    for side in sides:                               # warm-up, untimed
        for _ in range(args.warmup):
            losses[side].append(float(sides[side]()))
    load_before = load_avg()
    gc.collect()
    block = max(1, args.block)
    rounds = -(-args.steps // block)
    for r in range(rounds):
        order = ("cnntrain", "torch") if r % 2 == 0 else ("torch", "cnntrain")
        for side in order:
            losses[side].append(float(sides[side]()))          # transition step, untimed
            for _ in range(block):
                if len(times[side]) == args.steps:
                    break
                t0 = time.perf_counter()
                loss = sides[side]()
                times[side].append(time.perf_counter() - t0)
                losses[side].append(float(loss))
    load_after = load_avg()
    for side, ls in losses.items():
        if not all(np.isfinite(ls)):
            raise BenchError(f"{side}: non-finite loss during timing")

    def stats(ts):
        ms = sorted(t * 1e3 for t in ts)
        q = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) >= 2 else [ms[0]] * 3
        return {"median_ms": statistics.median(ms), "min_ms": ms[0], "max_ms": ms[-1],
                "q1_ms": q[0], "q3_ms": q[2], "mean_ms": statistics.fmean(ms)}

    st = {k: stats(v) for k, v in times.items()}
    ratio = st["cnntrain"]["median_ms"] / st["torch"]["median_ms"]
    print(f"\n{args.steps} timed steps per side (after {args.warmup} warm-up), alternating in "
          f"blocks of {block} (ABBA, first step of each block untimed)")
    if load_before and load_after:
        print(f"load average (1 min): {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"{'side':10} {'median ms':>10} {'min':>8} {'q1':>8} {'q3':>8} {'max':>8} "
          f"{'img/s':>8}")
    for side, s in st.items():
        print(f"{side:10} {s['median_ms']:10.2f} {s['min_ms']:8.2f} {s['q1_ms']:8.2f} "
              f"{s['q3_ms']:8.2f} {s['max_ms']:8.2f} {batch / s['median_ms'] * 1e3:8.0f}")
    print(f"ratio cnntrain/torch (medians): {ratio:.2f}x")

    kernels = None
    if args.profile:
        rows, kernels = profile_cnntrain(net, solver, args.profile)
        total = sum(f + b for _, f, b in rows)
        print(f"\ncnntrain per layer, mean over {args.profile} steps (ms):")
        print(f"{'layer':32} {'forward':>8} {'backward':>9} {'share':>6}")
        for name, f, b in sorted(rows, key=lambda r: -(r[1] + r[2])):
            print(f"{name:32} {f:8.2f} {b:9.2f} {100 * (f + b) / total:5.1f}%")
        print(f"{'total':32} {total:18.2f}")
        # The floor an im2col + BLAS engine cannot go below: its GEMMs alone, at the
        # rate the BLAS reaches for these shapes, against torch's whole step.
        torch_ms = st["torch"]["median_ms"]
        print(f"cnntrain's GEMMs alone: {kernels['gemm']:.2f} ms per step "
              f"({100 * kernels['gemm'] / total:.0f} % of its step), im2col/col2im "
              f"{kernels['im2col']:.2f} ms; torch's whole step {torch_ms:.2f} ms, so "
              f"the GEMMs alone are {kernels['gemm'] / torch_ms:.2f}x torch's step")
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.profile):
                torch_step(tnet, opt, inputs, clip)
        print(f"\ntorch ops, {args.profile} steps (torch.profiler):")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))

    if args.json:
        record = {
            "config": str(args.config), "net": exp.net.name, "batch": batch,
            "device": args.device,
            "cnntrain_rev": git_revision(),
            "threads": args.threads, "steps": args.steps, "warmup": args.warmup,
            "block": block,
            "machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(),
                        "system": f"{platform.system()} {platform.release()}",
                        "python": platform.python_version()},
            "numpy": np.__version__, "torch": torch.__version__,
            "blas": blas, "thread_env": {v: os.environ.get(v) for v in _THREAD_VARS},
            "openblas_coretype": coretype, "torch_threads": torch.get_num_threads(),
            "malloc_keeps_freed_memory": steady,
            "load_avg_before": load_before, "load_avg_after": load_after,
            "check": check,
            "cnntrain": st["cnntrain"], "torch_side": st["torch"],
            "ratio_cnntrain_over_torch": ratio,
        }
        if kernels is not None:
            record["cnntrain_kernel_ms"] = kernels
            record["gemm_alone_over_torch"] = kernels["gemm"] / st["torch"]["median_ms"]
        print(json.dumps(record))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BenchError, CnnTrainError) as err:
        print(f"compare_torch: {err}", file=sys.stderr)
        sys.exit(1)
