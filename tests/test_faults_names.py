"""Names that would later break files are refused once, where the config is read.

Layer names become HDF5 paths in snapshots (``data/<layer>/0``) and run names become
folders: a '/' made a snapshot that test, resume and predict could not read, and '.'
or a NUL failed with a traceback at the first snapshot. Both ``train --dry-run`` and
``train`` refuse such names with one line that says which rule they break.
"""
from __future__ import annotations

import pytest

import fault_figures
from test_faults_same_verdict import BASE, both, data  # noqa: F401 (fixture)

BAD = {
    "slash": ("conv/1", "'/'"),
    "dot": (".", "'.'"),
    "dotdot": ("..", "'..'"),
    "nul": ("conv\0", "control characters"),
    "newline": ("conv\n1", "control characters"),
    "escape": ("conv\x1b[31m", "control characters"),
    "rtl-override": ("conv\u202e1", "bidi"),
    "zero-width": ("conv\u200b1", "U+200B"),
}


def quoted(name: str) -> str:
    """``name`` as a YAML double-quoted scalar (escapes for what YAML cannot hold raw)."""
    return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}"
                         for c in name) + '"'


def written(tmp_path, text):
    config = tmp_path / "c.yaml"
    config.write_text(text, encoding="utf-8")
    return config


def check(dry, real, rule):
    assert dry == real, (dry, real)
    assert dry[0] == 2 and rule in dry[1], dry
    fault_figures.add("names")


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("where", ["layer", "blob", "run"])
def test_a_bad_name_is_refused_by_dry_run_and_train_alike(tmp_path, data, case, where):  # noqa: F811
    name, rule = BAD[case]
    if where == "layer":
        text = BASE.replace("- name: conv1", f"- name: {quoted(name)}")
    elif where == "blob":
        text = (BASE.replace("top: conv1", f"top: {quoted(name)}")
                .replace("bottom: conv1", f"bottom: {quoted(name)}"))
    else:
        text = BASE.replace("name: tiny\nnet:", f"name: {quoted(name)}\nnet:")
    assert text != BASE
    runs = tmp_path / "runs"
    dry, real = both(written(tmp_path, text), data, runs)
    check(dry, real, rule)
    assert not runs.exists() or not any(runs.rglob("*.h5"))


def test_a_shared_parameter_name_is_checked_too(tmp_path, data):  # noqa: F811
    text = BASE.replace("convolution_param: {num_output: 4,",
                        "param: [{name: 'w/1'}, {name: b}]\n"
                        "      convolution_param: {num_output: 4,")
    check(*both(written(tmp_path, text), data, tmp_path / "runs"), "'/'")
