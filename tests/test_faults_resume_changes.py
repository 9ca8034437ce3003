"""A resume is the run it claims to be: ``--resume`` with a config that differs from the
one stored in the snapshot is refused, naming the fields, unless only fields that do
not change what an iteration computes differ (``config.compare.RESUME_MAY_CHANGE``:
max_iter, display, snapshot, test settings); the run's config.yaml then says what ran.
"""
from __future__ import annotations

import pytest
import yaml

import fault_figures
from test_faults_run_folder import SHORT, data, train  # noqa: F401 (fixture)

CHANGES = {
    "batch size": (["--set", "net.layer.cifar.data_param.batch_size=4"],
                   "net.layer.cifar.data_param.batch_size"),
    "momentum": (["--set", "solver.momentum=0.5"], "solver.momentum"),
    "learning rate": (["--set", "solver.base_lr=0.5"], "solver.base_lr"),
    "augmentation": (["--set", "net.layer.cifar.transform_param.mirror=false"],
                     "net.layer.cifar.transform_param.mirror"),
    "random seed": (["--set", "solver.random_seed=4"], "solver.random_seed"),
    "filler": (["--set", "net.layer.conv1.convolution_param.weight_filler={type: gaussian}"],
               "net.layer.conv1.convolution_param.weight_filler.type"),
    "dropout": (["--set", "net.layer.drop.dropout_param.dropout_ratio=0.2"],
                "net.layer.drop.dropout_param.dropout_ratio"),
}


@pytest.fixture
def trained(tmp_path, data):  # noqa: F811
    config = tmp_path / "tiny.yaml"
    config.write_text(SHORT.replace("max_iter: 2", "max_iter: 4").replace("snapshot: 1",
                                                                          "snapshot: 2"))
    runs = tmp_path / "runs"
    assert train(config, data, runs).exit_code == 0
    return config, runs, runs / "tiny" / "snapshots" / "iter_2.h5"


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_resume_with_a_changed_config_is_refused_naming_the_field(trained, data, change):  # noqa: F811
    config, runs, snap = trained
    args, field = CHANGES[change]
    before = (runs / "tiny" / "config.yaml").read_text()
    result = train(config, data, runs, "--resume", snap, *args)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert result.exit_code == 4 and len(lines) == 1, result.output
    assert "another config" in lines[0] and field in lines[0], lines[0]
    assert (runs / "tiny" / "config.yaml").read_text() == before
    fault_figures.add("resume_changes")


def test_a_resume_may_extend_the_run_and_config_yaml_says_so(trained, data):  # noqa: F811
    config, runs, snap = trained
    result = train(config, data, runs, "--resume", snap, "--set", "solver.max_iter=6",
                   "--set", "solver.display=2")
    assert result.exit_code == 0, result.output
    ran = yaml.safe_load((runs / "tiny" / "config.yaml").read_text())
    assert ran["solver"]["max_iter"] == 6 and ran["solver"]["display"] == 2
    assert (runs / "tiny" / "snapshots" / "iter_6.h5").is_file()
    fault_figures.add("resume_changes")
