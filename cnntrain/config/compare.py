"""Which fields of two validated experiments differ: a resume checks the config it is
given against the one stored in the snapshot, so a resumed run is the run it claims."""
from __future__ import annotations

from dataclasses import fields

from cnntrain.config.specs import ExperimentSpec, LayerSpec

# Solver fields a resume may change: they decide how long the run goes on and what it
# reports and keeps, never what an iteration computes. The run name and ``logging``
# may change too (a resumed run can go on in a new folder).
RESUME_MAY_CHANGE = ("max_iter", "early_stop", "display", "average_loss", "snapshot",
                     "snapshot_keep", "snapshot_after_train", "test_interval", "test_iter",
                     "test_initialization")


def _differences(prefix: str, old, new) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            out += _differences(f"{prefix}.{key}", old.get(key), new.get(key))
        return out
    return [] if old == new else [prefix]


def _layer_differences(old: LayerSpec, new: LayerSpec) -> list[str]:
    prefix = f"net.layer.{new.name}"
    out = []
    for f in fields(LayerSpec):
        if f.name in ("where", "blocks"):
            continue
        if getattr(old, f.name) != getattr(new, f.name):
            out.append(f"{prefix}.{'param' if f.name == 'param_specs' else f.name}")
    return out + _differences(prefix, old.blocks, new.blocks)


def resume_differences(stored: ExperimentSpec, given: ExperimentSpec) -> list[str]:
    """The fields, as config paths, in which ``given`` differs from ``stored`` beyond
    what a resume may change (:data:`RESUME_MAY_CHANGE`)."""
    out = []
    old_layers, new_layers = stored.net.layers, given.net.layers
    if [(s.name, s.include, s.exclude) for s in old_layers] != \
            [(s.name, s.include, s.exclude) for s in new_layers]:
        out.append("net.layer (layers added, removed, renamed or moved)")
    else:
        for old, new in zip(old_layers, new_layers):
            out += _layer_differences(old, new)
    old_solver = {k: v for k, v in stored.solver.values.items() if k not in RESUME_MAY_CHANGE}
    new_solver = {k: v for k, v in given.solver.values.items() if k not in RESUME_MAY_CHANGE}
    out += _differences("solver", old_solver, new_solver)
    return list(dict.fromkeys(out))     # a TRAIN and a TEST layer may share a name
