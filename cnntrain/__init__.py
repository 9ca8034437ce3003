"""cnntrain: train convolutional networks from Caffe-style YAML configs, on NumPy."""
import os as _os
import sys as _sys

# cnntrain threads its own work (``engine.parallel``): every large GEMM's rows, and the
# copies and element-wise passes over the batch, which no BLAS threads. On the skinny
# GEMMs of convolutions, two single-threaded GEMMs on halves of the rows run 1.3-2x
# faster than one GEMM on two OpenBLAS threads, whose workers also busy-wait for about
# 0.1 s after each call and take the cores from everything else. So the BLAS itself
# gets one thread. This has to happen before NumPy loads it (the CLI imports cnntrain
# first); a value the user set wins.
_NUMPY_LOADED_FIRST = "numpy" in _sys.modules
_BLAS_ENV_BEFORE = _os.environ.get("OPENBLAS_NUM_THREADS")
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")

#: True when the BLAS runs on one thread, so that cnntrain's own workers may split work.
BLAS_SINGLE_THREADED = (_os.environ["OPENBLAS_NUM_THREADS"] == "1"
                        and (not _NUMPY_LOADED_FIRST or _BLAS_ENV_BEFORE == "1"))

__version__ = "0.1.0"
