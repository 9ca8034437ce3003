"""Update rules and learning-rate policies. They see parameter blobs, never layers."""
from cnntrain.solvers.adaptive import AdaDelta, AdaGrad, Adam, RMSProp
from cnntrain.solvers.base import Solver
from cnntrain.solvers.lr_policy import learning_rate
from cnntrain.solvers.sgd import SGD, Nesterov

# Caffe's type names; config/schema.py lists the same ones as solver.type's choices.
SOLVERS: dict[str, type[Solver]] = {cls.type_name: cls for cls in
                                    (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam)}


def make_solver(values, params) -> Solver:
    """The solver named by ``values.type`` over ``params``."""
    return SOLVERS[values.type](values, params)


__all__ = ["SGD", "SOLVERS", "AdaDelta", "AdaGrad", "Adam", "Nesterov", "RMSProp", "Solver",
           "learning_rate", "make_solver"]
