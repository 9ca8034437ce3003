"""``cnntrain ARGS`` with the nets built in float64 instead of float32, for the MPI tests:
in float64 the order in which a sum is taken changes nothing a test can see, so a run
split over several processes must match one process to ~1e-12.

    mpiexec -n 2 python tests/float64_child.py train CONFIG --runs-dir ... --no-progress
"""
import numpy as np

import cnntrain.trainer
from cnntrain.cli import main

_build_for = cnntrain.trainer.build_for


def _build_for_float64(exp, data_dir, notify, dtype=np.float32, **kwargs):
    return _build_for(exp, data_dir, notify, np.float64, **kwargs)


cnntrain.trainer.build_for = _build_for_float64

if __name__ == "__main__":
    main()
