"""The README tells the truth: its set-up makes a venv, its first training is a short
one, its --weights example copies layers (and its shape error is what the code says),
every shipped config is in the zoo table with the count summary gives, and its short
commands that need no dataset run as printed."""
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from cnntrain.config.overrides import load_experiment_with
from cnntrain.errors import SnapshotError
from cnntrain.layers import BuildContext
from cnntrain.net import Net
from cnntrain.rng import RngStreams
from cnntrain.snapshot import copy_weights, load_snapshot, save_snapshot
from cnntrain.tools.inputs import replace_data_layers
from tool_helpers import run

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def code_lines() -> list[str]:
    """Lines of the README's code blocks, continuation lines joined, prompts dropped."""
    lines, inside, block = [], False, []
    for line in README.splitlines():
        if line.startswith("```"):
            if inside:
                joined = "\n".join(block).replace("\\\n", " ")
                lines += [part.strip().removeprefix("$ ") for part in joined.splitlines()]
            inside, block = not inside, []
        elif inside:
            block.append(line)
    return lines


def commands(prefix: str) -> list[list[str]]:
    """The README's commands starting with ``prefix``, as argument lists (comments and
    pipes cut off)."""
    found = []
    for line in code_lines():
        for part in line.split("&&"):
            part = part.split(" #")[0].split(" | ")[0].strip()
            if part.startswith(prefix):
                found.append(shlex.split(part)[1:])
    return found


def test_setup_makes_a_venv_then_trains_briefly_and_the_ci_does_the_same():
    first = next(line for line in code_lines() if "pip install" in line)
    assert first.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install -e")
    train = [c for c in commands("cnntrain train") if c[1:2] == ["configs/cifar10_quick.yaml"]]
    short = train[0]
    exp = load_experiment_with(ROOT / short[1], [short[i + 1] for i, a in enumerate(short)
                                                 if a == "--set"])
    assert exp.solver.max_iter <= 500 and exp.name != "cifar10_quick"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m venv" in ci and "python -m pytest" in ci


def _net(config: Path, overrides=()) -> Net:
    exp = load_experiment_with(config, overrides)
    spec, _ = replace_data_layers(exp.net)
    return Net(spec, "TRAIN", BuildContext(RngStreams(1), np.float32, notify=lambda _: None))


def test_the_weights_example_copies_layers_and_without_its_rename_says_to_rename(tmp_path):
    example = next(c for c in commands("cnntrain train") if "--weights" in c)
    source = _net(ROOT / "configs" / "cifar10_quick.yaml")   # the snapshot's net
    assert "runs/cifar10_quick/" in example[example.index("--weights") + 1]
    snap = tmp_path / "iter_5000.h5"
    save_snapshot(snap, params=source.param_keys, config="", iteration=0, solver_type="SGD",
                  history=[[] for _ in source.param_keys], rng="{}", data_state={})
    overrides = [example[i + 1] for i, a in enumerate(example) if a == "--set"]
    target = _net(ROOT / example[1], overrides)
    copied = copy_weights(target, load_snapshot(snap), strict=False)
    assert copied == ["conv1", "conv2", "conv3"]
    with pytest.raises(SnapshotError) as err:
        copy_weights(_net(ROOT / example[1]), load_snapshot(snap), strict=False)
    shown = next(line for line in code_lines() if "param 0 has shape" in line)
    assert str(err.value).replace(str(snap), "runs/cifar10_quick/snapshots/iter_5000.h5") == \
        shown.removeprefix("error: ")


def test_every_shipped_config_is_in_the_zoo_table_with_its_parameter_count():
    table = dict(re.findall(r"^\| `([\w/]+\.yaml)` \| .*? \| ([\d,]+) \|$", README, re.M))
    shipped = sorted(str(p.relative_to(ROOT / "configs"))
                     for p in (ROOT / "configs").glob("**/*.yaml"))
    assert sorted(table) == shipped
    for config, count in table.items():
        if config.startswith("imagenet/"):
            continue    # counted by test_model_zoo; their nets are large to build here
        result = run("summary", ROOT / "configs" / config, "-q")
        assert result.exit_code == 0, result.output
        assert f" {count.replace(',', '')} parameters" in result.stdout, config


def printed_errors() -> dict[tuple[str, ...], str]:
    """The README's commands that it shows failing: argv → the ``error:`` line after it."""
    lines = code_lines()
    return {tuple(shlex.split(line.lstrip("$ ").split(" #")[0])[1:]): nxt.strip()
            for line, nxt in zip(lines, lines[1:])
            if line.lstrip("$ ").startswith("cnntrain ") and nxt.startswith("error:")}


def test_the_readmes_commands_that_need_no_data_run_as_printed(monkeypatch, tmp_path):
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    ran = []
    for argv in commands("cnntrain"):
        shipped = len(argv) > 1 and argv[1].startswith("configs/")   # not files made above
        short = (argv[0] in ("summary", "schedule") and "-o" not in argv) \
            or "--dry-run" in argv or (argv[0] == "draw" and argv[-1].endswith(".svg"))
        if not (shipped and short):
            continue
        result = run(*argv)
        error = printed_errors().get(tuple(argv))
        if error is None:
            assert result.exit_code == 0, (argv, result.output)
        else:   # shown failing: the same one line, as an invalid config
            assert result.exit_code == 2 and result.stderr.strip() == error, (argv, result.output)
        ran.append(argv[0])
    assert {"train", "draw"} <= set(ran)
    assert (tmp_path / "net.svg").read_text().lstrip().startswith("<")
