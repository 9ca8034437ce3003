"""Progress on long work: plain periodic lines when stderr is not a terminal (logs,
pipes), for training, its test phases, cnntrain test and port."""
import io

import pytest

import cnntrain.progress as progress_module
from cnntrain.progress import PlainProgress, Steps, progress_bar
from test_cli_e2e import CONFIG, write_cifar10_binary
from tool_helpers import run


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_plain_progress_writes_a_line_per_interval_and_a_last_one():
    clock, out = Clock(), io.StringIO()
    bar = PlainProgress(100, "job", "it", stream=out, interval=10, clock=clock)
    for _ in range(50):
        clock.now += 1
        bar.update(1)
    bar.set_postfix(loss="0.5")
    for _ in range(50):
        clock.now += 1
        bar.update(1)
    bar.close()
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0] == "job: 11/100 it (11%), 1 it/s, 1:29 left"
    assert len(lines) == 10 and lines[-1].startswith("job: 100/100 it (100%)")
    assert "loss 0.5" in lines[-1]


def test_short_work_stays_quiet_and_steps_count():
    clock, out = Clock(), io.StringIO()
    bar = PlainProgress(5, "quick", "batch", stream=out, interval=10, clock=clock)
    bar.update(5)
    bar.close()
    assert out.getvalue() == ""
    said = []
    steps = Steps(2, said.append, clock=clock)
    steps.step("one")
    clock.now = 2.5
    steps.step("two")
    assert said == ["step 1/2: one (0.0 s so far)", "step 2/2: two (2.5 s so far)"]


def test_not_a_terminal_gives_plain_progress():
    assert isinstance(progress_bar(10, "x"), PlainProgress)     # pytest captures stderr


@pytest.fixture
def every_update(monkeypatch):
    monkeypatch.setattr(progress_module, "PLAIN_INTERVAL", 0.0)


def test_train_and_test_show_plain_progress_lines(tmp_path, every_update):
    data = write_cifar10_binary(tmp_path / "data")
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    trained = run("train", config, "--data-dir", data, "--runs-dir", tmp_path / "r")
    assert trained.exit_code == 0, trained.output
    err = trained.stderr
    assert "\r" not in err
    assert "tiny: 12/12 it (100%)" in err
    assert "test at iteration 6: 3/3 batch (100%)" in err      # 25 test images, batch 10
    assert "iter 12: loss" in trained.stdout                  # log lines stay on stdout

    tested = run("test", tmp_path / "r/tiny/snapshots/iter_12.h5", "--data-dir", data,
                 "--tta", "flip+shift")
    assert tested.exit_code == 0, tested.output
    assert "testing iter_12.h5: 3/3 batch (100%)" in tested.stderr
    assert "\r" not in tested.stderr
    quiet = run("test", tmp_path / "r/tiny/snapshots/iter_12.h5", "--data-dir", data, "-q")
    assert quiet.stderr == ""


def test_port_reports_its_steps(tmp_path):
    data = write_cifar10_binary(tmp_path / "data")
    result = run("port", "cifar10", "--data-dir", data, "--configs-dir", tmp_path / "configs")
    assert result.exit_code == 0, result.output
    steps = [line.split(":")[0] for line in result.stdout.splitlines()
             if line.startswith("step ")]
    assert steps == ["step 1/4", "step 2/4", "step 3/4", "step 4/4"]


def test_the_rate_leaves_out_what_came_before_the_first_update():
    """A test at iteration 0 (or data loading) before the first step would otherwise
    make the time left far too long."""
    clock, out = Clock(), io.StringIO()
    bar = PlainProgress(100, "run", "it", stream=out, interval=10, clock=clock)
    clock.now = 100.0            # the test at iteration 0
    bar.update(1)
    for _ in range(10):
        clock.now += 1
        bar.update(1)
    assert out.getvalue().splitlines() == ["run: 11/100 it (11%), 1 it/s, 1:29 left"]
