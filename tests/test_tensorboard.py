"""TensorBoard logging (optional tensorboardX): the scalars are metrics.csv's, a resume
hides what the interrupted run wrote past it, and without the package the flag is a
one-line error before training."""
import struct
import sys

import pytest

from test_cli_e2e import CONFIG, metrics, setup  # noqa: F401 - setup is a fixture
from tool_helpers import run


def read_events(folder) -> list[tuple[str, int, float]]:
    """(tag, step, value) of every scalar in the TFRecord event files of ``folder``,
    in the order written (TensorBoard's purge step applied as TensorBoard does)."""
    from tensorboardX.proto import event_pb2

    out = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            if event.session_log.status == event_pb2.SessionLog.START:
                out = [e for e in out if e[1] < event.step]      # purge_step
            for value in event.summary.value:
                out.append((value.tag, event.step, value.simple_value))
    return out


def test_scalars_are_the_metrics_rows(setup):
    pytest.importorskip("tensorboardX", reason="tensorboardX (the tensorboard extra) is not "
                                               "installed")
    tmp, data, config = setup
    result = run("train", config, "--data-dir", data, "--runs-dir", tmp / "a", "--no-progress",
                 "--tensorboard")
    assert result.exit_code == 0, result.output
    run_dir = tmp / "a" / "tiny"
    events = read_events(run_dir / "tensorboard")
    rows = metrics(run_dir)
    for column, tag in (("loss", "train/loss"), ("lr", "train/lr"), ("test_loss", "test/loss"),
                        ("test_accuracy", "test/accuracy")):
        want = [(int(r["iter"]), float(r[column])) for r in rows if r[column]]
        got = [(step, value) for t, step, value in events if t == tag]
        assert [s for s, _ in got] == [s for s, _ in want], tag
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-5), tag
    assert [step for t, step, _ in events if t == "test/top5"] == [0, 6, 12]


def test_config_block_and_resume(setup):
    pytest.importorskip("tensorboardX", reason="tensorboardX (the tensorboard extra) is not "
                                               "installed")
    tmp, data, config = setup
    config.write_text(CONFIG + "logging: {tensorboard: true}\n")
    assert run("train", config, "--data-dir", data, "--runs-dir", tmp / "a",
               "--no-progress").exit_code == 0
    run_dir = tmp / "a" / "tiny"
    assert "logging:\n  tensorboard: true" in (run_dir / "config.yaml").read_text()
    whole = read_events(run_dir / "tensorboard")
    # Resume the same run folder from iteration 6: what was written after 6 is replaced.
    resumed = run("train", config, "--data-dir", data, "--runs-dir", tmp / "a", "--no-progress",
                  "--resume", run_dir / "snapshots" / "iter_6.h5")
    assert resumed.exit_code == 0, resumed.output
    again = read_events(run_dir / "tensorboard")
    assert sorted((t, s) for t, s, _ in again) == sorted((t, s) for t, s, _ in whole)
    assert [v for _, _, v in sorted(again)] == pytest.approx([v for _, _, v in sorted(whole)])


def test_without_tensorboardx_one_line_before_training(setup, monkeypatch):
    tmp, data, config = setup
    monkeypatch.setitem(sys.modules, "tensorboardX", None)       # import → ImportError
    for extra_text, flags in (("", ["--tensorboard"]), ("logging: {tensorboard: true}\n", [])):
        config.write_text(CONFIG + extra_text)
        result = run("train", config, "--data-dir", data, "--runs-dir", tmp / "r",
                     "--no-progress", *flags)
        assert result.exit_code == 1
        assert result.stderr == ("error: TensorBoard logging needs tensorboardX: pip install "
                                 "'cnntrain[tensorboard]' (or pip install tensorboardX)\n")
        assert not (tmp / "r").exists()          # nothing started
        dry = run("train", config, "--dry-run", *flags)
        assert dry.exit_code == 0 and "note: TensorBoard logging needs tensorboardX" in dry.stderr
