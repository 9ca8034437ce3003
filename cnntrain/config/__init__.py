"""Config files → validated specs."""
from cnntrain.config.specs import ExperimentSpec, LayerSpec, NetSpec, SolverSpec
from cnntrain.config.validate import (experiment_from_text, load_experiment, parse_layer,
                                      parse_net, parse_solver)

__all__ = ["ExperimentSpec", "LayerSpec", "NetSpec", "SolverSpec", "experiment_from_text",
           "load_experiment", "parse_layer", "parse_net", "parse_solver"]
