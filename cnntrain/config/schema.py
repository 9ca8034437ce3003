"""The one schema: every field a config may hold, with its type, default and bounds.

Like caffe.proto, this is the single place that defines the fields. Layer classes name
the ``*_param`` blocks they read; the validator checks each block against this table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

REQUIRED = object()  # marker: the field has no default


@dataclass(frozen=True)
class Field:
    """One field: ``kind`` is int, float, bool, str, enum, ints, floats, shape, filler, or
    block (a nested mapping whose fields are ``fields``)."""

    kind: str
    default: Any = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    choices: tuple[str, ...] = ()
    doc: str = ""
    fields: dict[str, "Field"] | None = field(default=None, hash=False, compare=False)


def _filler(default_type: str) -> Field:
    return Field("filler", default={"type": default_type})


FILLER = {
    "type": Field("enum", "constant", choices=("constant", "gaussian", "uniform", "xavier", "msra",
                                               "whitening"),
                  doc="whitening: a Convolution reading a Data layer's images, filled with the "
                      "eigenvectors of the training images' patch covariance (see fillers.py)"),
    "value": Field("float", 0.0),
    "min": Field("float", 0.0),
    "max": Field("float", 1.0),
    "mean": Field("float", 0.0),
    "std": Field("float", 1.0, min=0.0),
    "variance_norm": Field("enum", "FAN_IN", choices=("FAN_IN", "FAN_OUT", "AVERAGE")),
    "dirac": Field("bool", False, doc="convolutions: then make the first min(Cout, C/group) "
                                      "filters the identity (1 at the centre tap of their own "
                                      "channel), so the layer starts by passing its input on"),
    "eps": Field("float", 5e-4, min=0.0, min_exclusive=True,
                 doc="whitening: added to each eigenvalue before dividing by its square root"),
    "images": Field("int", 5000, min=1, doc="whitening: how many training images (the first "
                                           "ones, in file order) give the patch covariance"),
}

# A 2-D window's kernel, stride and pad, square or per axis (Caffe's spelling).
_WINDOW = {
        "kernel_size": Field("ints", None, min=1),
        "kernel_h": Field("int", None, min=1),
        "kernel_w": Field("int", None, min=1),
        "stride": Field("ints", None, min=1),
        "stride_h": Field("int", None, min=1),
        "stride_w": Field("int", None, min=1),
        "pad": Field("ints", None, min=0),
        "pad_h": Field("int", None, min=0),
        "pad_w": Field("int", None, min=0),
}

PARAM_BLOCKS: dict[str, dict[str, Field]] = {
    "convolution_param": {
        "num_output": Field("int", REQUIRED, min=1),
        "bias_term": Field("bool", True),
        **_WINDOW,
        "group": Field("int", 1, min=1),
        "dilation": Field("ints", None, min=1, doc="1 or [h, w]: kernel taps this many "
                                                    "pixels apart (Caffe's dilation)"),
        # Caffe defaults to a constant-zero weight filler, which silently never learns;
        # xavier is the default here, and any Caffe filler may still be given.
        "weight_filler": _filler("xavier"),
        "bias_filler": _filler("constant"),
        "engine": Field("enum", "DEFAULT", choices=("DEFAULT", "CAFFE", "WINOGRAD"),
                        doc="CAFFE: im2col + GEMM; WINOGRAD: Winograd's F(4x4,3x3) or "
                            "F(2x2,3x3) (3x3, stride 1, one group); DEFAULT: WINOGRAD "
                            "where it applies and pays, else CAFFE"),
    },
    "pooling_param": {
        "pool": Field("enum", "MAX", choices=("MAX", "AVE")),
        "kernel_size": Field("int", None, min=1),
        "kernel_h": Field("int", None, min=1),
        "kernel_w": Field("int", None, min=1),
        "stride": Field("int", None, min=1),
        "stride_h": Field("int", None, min=1),
        "stride_w": Field("int", None, min=1),
        "pad": Field("int", None, min=0),
        "pad_h": Field("int", None, min=0),
        "pad_w": Field("int", None, min=0),
        "global_pooling": Field("bool", False),
        "round_mode": Field("enum", "CEIL", choices=("CEIL", "FLOOR"),
                            doc="output size rounding: CEIL (Caffe's default) or FLOOR "
                                "(PyTorch's and cuDNN's; the last partial window is dropped)"),
    },
    "batch_norm_param": {
        "use_global_stats": Field("bool", None, doc="normalize with the running statistics "
                                                    "instead of the batch's; default: false in "
                                                    "TRAIN, true in TEST"),
        "moving_average_fraction": Field("float", 0.999, min=0.0, max=1.0,
                                         doc="running stats: s <- f*s + batch value"),
        "eps": Field("float", 1e-5, min=0.0, min_exclusive=True),
    },
    "scale_param": {
        "axis": Field("int", 1, doc="first axis of the bottom the scale applies along"),
        "num_axes": Field("int", 1, min=-1, doc="axes the learned scale spans; -1: to the "
                                                "end; 0: one scalar (one bottom only)"),
        "filler": Field("filler", default={"type": "constant", "value": 1.0}),
        "bias_term": Field("bool", False, doc="also add a learned bias of the same shape"),
        "bias_filler": _filler("constant"),
    },
    "bias_param": {
        "axis": Field("int", 1),
        "num_axes": Field("int", 1, min=-1, doc="as in scale_param (one bottom only)"),
        "filler": _filler("constant"),
    },
    "lrn_param": {
        "local_size": Field("int", 5, min=1, doc="odd: channels (or pixels per side) summed"),
        "alpha": Field("float", 1.0, min=0.0),
        "beta": Field("float", 0.75),
        "k": Field("float", 1.0, min=0.0, min_exclusive=True,
                   doc="ACROSS_CHANNELS only (WITHIN_CHANNEL adds 1, as Caffe does)"),
        "norm_region": Field("enum", "ACROSS_CHANNELS",
                             choices=("ACROSS_CHANNELS", "WITHIN_CHANNEL")),
    },
    "concat_param": {
        "axis": Field("int", None, doc="default: 1"),
        "concat_dim": Field("int", None, min=0, doc="legacy name of axis"),
    },
    "eltwise_param": {
        "operation": Field("enum", "SUM", choices=("PROD", "SUM", "MAX")),
        "coeff": Field("floats", None, doc="SUM: one factor per bottom (default all 1)"),
        "stable_prod_grad": Field("bool", True, doc="PROD: gradient as the product of the "
                                                    "other bottoms, not top / bottom"),
    },
    "slice_param": {
        "axis": Field("int", None, doc="default: 1"),
        "slice_dim": Field("int", None, min=0, doc="legacy name of axis"),
        "slice_point": Field("ints", None, min=1, doc="increasing, one fewer than the tops; "
                                                      "default: equal parts"),
    },
    "reshape_param": {
        "shape": Field("shape", REQUIRED, min=-1, doc="dim 0 copies the bottom's dimension, "
                                                      "-1 (at most one) is inferred"),
        "axis": Field("int", 0, doc="first bottom axis replaced"),
        "num_axes": Field("int", -1, min=-1, doc="bottom axes replaced; -1: all to the end"),
    },
    "crop_param": {
        "axis": Field("int", 2, doc="crop this axis and all after it"),
        "offset": Field("ints", None, min=0, doc="one for all cropped axes, or one per axis; "
                                                 "default 0"),
    },
    "inner_product_param": {
        "num_output": Field("int", REQUIRED, min=1),
        "bias_term": Field("bool", True),
        "axis": Field("int", 1),
        "weight_filler": _filler("xavier"),
        "bias_filler": _filler("constant"),
    },
    "relu_param": {"negative_slope": Field("float", 0.0)},
    "softplus_param": {"beta": Field("float", 1.0, min=0.0, min_exclusive=True)},
    "dropout_param": {
        "dropout_ratio": Field("float", 0.5, min=0.0, max=1.0, max_exclusive=True),
    },
    "softmax_param": {"axis": Field("int", 1)},
    "flatten_param": {"axis": Field("int", 1), "end_axis": Field("int", -1)},
    "accuracy_param": {
        "top_k": Field("int", 1, min=1),
        "axis": Field("int", 1),
        "ignore_label": Field("int", None),
    },
    "loss_param": {
        "ignore_label": Field("int", None),
        "normalization": Field("enum", None, choices=("VALID", "BATCH_SIZE", "FULL", "NONE"),
                               doc="default as in Caffe: BATCH_SIZE for "
                                   "SigmoidCrossEntropyLoss, VALID for the others"),
        "label_smoothing": Field("float", 0.0, min=0.0, max=1.0, max_exclusive=True,
                                 doc="SoftmaxWithLoss: targets (1 - eps) one-hot + eps/K"),
    },
    "input_param": {"shape": Field("shape", REQUIRED)},
    "data_param": {
        "dataset": Field("enum", None, choices=("cifar10", "cifar100"),
                         doc="required (with hdf5 it must match the file)"),
        "hdf5": Field("str", None, doc="a native file written by cnntrain port; a relative "
                                       "path is taken in the data directory"),
        "labels": Field("enum", "fine", choices=("fine", "coarse"),
                        doc="CIFAR-100: the 100 classes, or the 20 superclasses"),
        "source": Field("str", None, doc="a folder or archive; default: the data directory"),
        "split": Field("enum", None, choices=("train", "test"),
                       doc="default: train, or the split of the hdf5 file"),
        "batch_size": Field("int", REQUIRED, min=1),
        "shuffle": Field("bool", None, doc="default: on in TRAIN, off in TEST"),
        "prefetch": Field("bool", True, doc="TRAIN: cut the next batch in a background "
                                            "thread (the batches are the same either way)"),
    },
    "transform_param": {
        "scale": Field("float", 1.0),
        "mirror": Field("bool", False),
        "mirror_mode": Field("enum", "random", choices=("random", "alternate"),
                             doc="random: each image flipped with probability 1/2 in each "
                                 "batch; alternate: each image flipped in every other "
                                 "epoch, starting from a random half"),
        "shift": Field("int", 0, min=0, doc="random shift of up to N px, padded as pad_mode "
                                            "says"),
        "pad_mode": Field("enum", "zero", choices=("zero", "reflect"),
                          doc="how shifts and shifted test views fill the border: zero (the "
                              "mean colour) or the image reflected about its edge"),
        "test_views": Field("enum", "none", choices=("none", "flip", "flip+shift"),
                            doc="test-time augmentation that cnntrain test applies: the "
                                "softmax averaged over the mirrored (flip: 2 views) and "
                                "test_shift px shifted (flip+shift: 6 views) images"),
        "test_shift": Field("int", 2, min=1, doc="the shift of flip+shift's shifted views"),
        "crop_size": Field("int", 0, min=0),
        "mean_value": Field("floats", None),
        "mean_image": Field("bool", False, doc="subtract the training split's per-pixel mean"),
        # TRAIN-only augmentations (see data/augment.py); the validator refuses them in TEST.
        "erase_prob": Field("float", 0.0, min=0.0, max=1.0,
                            doc="Cutout / random erasing: the chance each image gets a box "
                                "erased; 0: off"),
        "erase_size": Field("int", 0, min=0, doc="Cutout: a square of this side centred "
                                                 "anywhere (clipped at the edges); 0: random "
                                                 "erasing with erase_scale and erase_ratio"),
        "erase_scale": Field("floats", [0.02, 1 / 3], min=0.0,
                             doc="random erasing: [min, max] share of the image's area"),
        "erase_ratio": Field("floats", [0.3, 3.3], min=0.0,
                             doc="random erasing: [min, max] aspect ratio (width / height)"),
        "erase_fill": Field("enum", "value", choices=("value", "random"),
                            doc="value: erase_value; random: standard normal noise"),
        "erase_value": Field("float", 0.0, doc="the fill, after mean and scale (0: the mean "
                                               "colour when the mean is subtracted)"),
        "resized_crop": Field("bool", False,
                              doc="random resized crop: a box of random area share and aspect "
                                  "ratio, resized bilinearly to crop_size (default: the image "
                                  "size); replaces shift"),
        "resized_crop_scale": Field("floats", [0.08, 1.0], min=0.0,
                                    doc="[min, max] share of the image's area"),
        "resized_crop_ratio": Field("floats", [0.75, 4 / 3], min=0.0,
                                    doc="[min, max] aspect ratio (width / height), drawn "
                                        "log-uniformly"),
        "mixup_alpha": Field("float", 0.0, min=0.0,
                             doc="mixup: blend each batch with a permutation of itself, "
                                 "lam ~ Beta(alpha, alpha); the labels become (a, b, lam) "
                                 "mixed targets; 0: off"),
        "cutmix_alpha": Field("float", 0.0, min=0.0,
                              doc="CutMix: paste a box of the permuted batch, area 1 - lam; "
                                  "with mixup_alpha too, each batch is one or the other"),
        "mix_prob": Field("float", 1.0, min=0.0, max=1.0,
                          doc="the chance a batch is mixed (mixup or CutMix)"),
    },
    # --- activations, losses, and the layers of Bouvrie's "Notes on CNNs" -------------
    "prelu_param": {
        "filler": Field("filler", {"type": "constant", "value": 0.25}),
        "channel_shared": Field("bool", False, doc="one slope for all channels"),
    },
    "elu_param": {"alpha": Field("float", 1.0)},
    "gelu_param": {
        "approximate": Field("enum", "none", choices=("none", "tanh"),
                             doc="none: x Phi(x) exactly; tanh: the tanh approximation"),
    },
    "swish_param": {"beta": Field("float", 1.0)},
    "power_param": {
        "power": Field("float", 1.0),
        "scale": Field("float", 1.0),
        "shift": Field("float", 0.0),
    },
    "exp_param": {
        "base": Field("float", -1.0, doc="> 0, or -1 for e"),
        "scale": Field("float", 1.0),
        "shift": Field("float", 0.0),
    },
    "log_param": {
        "base": Field("float", -1.0, doc="> 0 and != 1, or -1 for e"),
        "scale": Field("float", 1.0),
        "shift": Field("float", 0.0),
    },
    "hinge_loss_param": {"norm": Field("enum", "L1", choices=("L1", "L2"))},
    "infogain_loss_param": {
        "source": Field("str", None, doc="a .npy file holding the K x K matrix H "
                                         "(or give H as a third bottom)"),
        "axis": Field("int", 1),
    },
    "subsampling_param": {
        "kernel_size": Field("ints", None, min=1),
        "kernel_h": Field("int", None, min=1),
        "kernel_w": Field("int", None, min=1),
        "method": Field("enum", "SUM", choices=("SUM", "MEAN"),
                        doc="down(x): the sum (Bouvrie's notes) or the mean of each block"),
        "bias_term": Field("bool", True),
        "scale_filler": Field("filler", {"type": "constant", "value": 1.0}),
        "bias_filler": _filler("constant"),
        "activation": Field("enum", "NONE", choices=("NONE", "SIGMOID", "TANH")),
    },
    "map_combination_param": {
        "num_output": Field("int", REQUIRED, min=1),
        "bias_term": Field("bool", True),
        **_WINDOW,
        "weight_filler": _filler("xavier"),
        "bias_filler": _filler("constant"),
        "combination_filler": _filler("constant"),
        "sparsity": Field("float", 0.0, min=0.0, doc="lambda of the penalty on alpha"),
        "sparsity_type": Field("enum", "L1", choices=("L1", "ENTROPY"),
                               doc="L1: Bouvrie's lambda sum |alpha| (a constant under the "
                                   "softmax); ENTROPY: lambda sum_j H(alpha_.j)"),
    },
}

PARAM_SPEC = {
    "lr_mult": Field("float", 1.0, min=0.0),
    "decay_mult": Field("float", 1.0, min=0.0),
    "name": Field("str", None),
    "freeze_iter": Field("int", None, min=1,
                         doc="the solver stops updating this parameter from this "
                             "iteration on (progressive freezing); default: never"),
}

# solver.early_stop: checked at each test (callbacks.EarlyStop).
EARLY_STOP = {
    "metric": Field("enum", "test_accuracy", choices=("test_accuracy", "test_loss"),
                    doc="test_accuracy must rise, test_loss must fall"),
    "patience": Field("int", REQUIRED, min=1,
                      doc="stop after this many tests without an improvement"),
    "min_delta": Field("float", 0.0, min=0.0,
                       doc="a change this small or smaller is no improvement"),
}

LR_POLICIES = ("fixed", "step", "multistep", "exp", "inv", "poly", "sigmoid", "cosine",
               "piecewise")

SOLVER: dict[str, Field] = {
    "type": Field("enum", "SGD",
                  choices=("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")),
    "base_lr": Field("float", REQUIRED, min=0.0, min_exclusive=True),
    "lr_policy": Field("enum", "fixed", choices=LR_POLICIES),
    "gamma": Field("float", None),
    "power": Field("float", None),
    "stepsize": Field("int", None, min=1),
    "stepvalue": Field("ints", None, min=1),
    "min_lr": Field("float", 0.0, min=0.0, doc="cosine: the rate reached at max_iter"),
    "piecewise_iters": Field("ints", None, min=0,
                             doc="piecewise: increasing iterations where the rate is "
                                 "base_lr times the matching piecewise_factors entry; "
                                 "linear in between, held before the first and after the last"),
    "piecewise_factors": Field("floats", None, min=0.0,
                               doc="piecewise: one factor of base_lr per piecewise_iters entry"),
    "lookahead_interval": Field("int", 0, min=0,
                                doc="every N iterations, pull slow weights toward the weights "
                                    "and reset the weights to them (Lookahead); 0: off"),
    "lookahead_decay": Field("float", 0.5, min=0.0, max=1.0, max_exclusive=True,
                             doc="the share of the slow weights kept at each sync: "
                                 "slow <- d*slow + (1-d)*w; then w <- slow"),
    "lookahead_decay_power": Field("float", 0.0, min=0.0,
                                   doc="ramp the decay over the run: d * (iter/max_iter)^p "
                                       "(0: constant)"),
    "warmup_iter": Field("int", 0, min=0, doc="ramp the rate up linearly over N iterations"),
    "warmup_start_factor": Field("float", 0.0, min=0.0, max=1.0,
                                 doc="the warmup starts from this fraction of the rate"),
    "momentum": Field("float", None, min=0.0, max=1.0, max_exclusive=True,
                      doc="default by type: 0 (SGD, Nesterov), 0.9 (Adam beta1), "
                          "0.95 (AdaDelta rho)"),
    "momentum2": Field("float", 0.999, min=0.0, max=1.0, max_exclusive=True, doc="Adam beta2"),
    "rms_decay": Field("float", 0.99, min=0.0, max=1.0, max_exclusive=True),
    "delta": Field("float", 1e-8, min=0.0, min_exclusive=True,
                   doc="AdaGrad, RMSProp, AdaDelta, Adam: keeps divisions finite"),
    "weight_decay": Field("float", 0.0, min=0.0),
    "regularization_type": Field("enum", "L2", choices=("L2", "L1")),
    "weight_decay_mode": Field("enum", "coupled", choices=("coupled", "decoupled"),
                               doc="coupled: added to the gradient (Caffe); "
                                   "decoupled: w -= lr*lr_mult*weight_decay*decay_mult*w (AdamW)"),
    "clip_gradients": Field("float", 0.0, min=0.0,
                            doc="scale all gradients down to this global L2 norm; 0: off"),
    "iter_size": Field("int", 1, min=1, doc="forward/backward passes summed per update"),
    "max_iter": Field("int", REQUIRED, min=1),
    "display": Field("int", 100, min=0),
    "average_loss": Field("int", 1, min=1),
    "test_interval": Field("int", 0, min=0),
    "test_iter": Field("int", None, min=1, doc="default: the whole test set"),
    "test_initialization": Field("bool", True),
    "snapshot": Field("int", 0, min=0),
    "snapshot_after_train": Field("bool", True),
    "snapshot_keep": Field("int", 0, min=0,
                           doc="keep the newest N snapshots (and the best by test accuracy); "
                               "0: keep all"),
    "random_seed": Field("int", 1, min=0),
    "early_stop": Field("block", None, fields=EARLY_STOP,
                        doc="{metric, patience, min_delta}: stop when the test metric "
                            "stalls; needs test_interval"),
}

# The top-level ``logging`` block: where training is recorded besides runs/<name>/.
LOGGING = {
    "tensorboard": Field("bool", False, doc="also write TensorBoard event files to "
                                            "runs/<name>/tensorboard (needs tensorboardX)"),
}

# Which lr_policy needs which fields (the formulas are in solvers/lr_policy.py).
POLICY_NEEDS = {
    "fixed": (),
    "step": ("gamma", "stepsize"),
    "multistep": ("gamma", "stepvalue"),
    "exp": ("gamma",),
    "inv": ("gamma", "power"),
    "poly": ("power",),
    "sigmoid": ("gamma", "stepsize"),
    "cosine": (),
    "piecewise": ("piecewise_iters", "piecewise_factors"),
}

LAYER_FIELDS = ("name", "type", "bottom", "top", "param", "include", "exclude",
                "loss_weight", "propagate_down")
TOP_LEVEL = ("name", "net", "solver", "logging")
NET_FIELDS = ("name", "layer")
PHASES = ("TRAIN", "TEST")
