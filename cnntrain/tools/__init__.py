"""Tools built on the net and solvers (gradient check, ...)."""
