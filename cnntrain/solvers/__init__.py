"""Update rules and learning-rate policies. They see parameter blobs, never layers."""
from cnntrain.solvers.lr_policy import learning_rate
from cnntrain.solvers.sgd import SGD

SOLVERS = {"SGD": SGD}


def make_solver(values, params):
    """The solver named by ``values.type`` over ``params``."""
    return SOLVERS[values.type](values, params)


__all__ = ["SGD", "SOLVERS", "learning_rate", "make_solver"]
