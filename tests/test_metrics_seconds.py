"""metrics.csv's ``seconds`` counts training time across a resume instead of restarting."""
import csv

import h5py

from test_cli_e2e import CONFIG, run, write_cifar10_binary


def _seconds(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return [(int(r["iter"]), float(r["seconds"])) for r in csv.DictReader(f)]


def _train_then_resume(tmp_path, edit):
    data = write_cifar10_binary(tmp_path / "data")
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    args = ["--data-dir", data, "--runs-dir", tmp_path / "r", "--no-progress"]
    assert run("train", config, *args).exit_code == 0
    run_dir = tmp_path / "r" / "tiny"
    snap = run_dir / "snapshots" / "iter_6.h5"
    edit(snap, run_dir)
    resumed = run("train", "--resume", snap, *args)
    assert resumed.exit_code == 0, resumed.output
    return _seconds(run_dir)


def test_seconds_go_on_from_the_snapshots_count(tmp_path):
    def pretend_long(snap, run_dir):
        with h5py.File(snap, "r") as f:
            assert 0 < f.attrs["seconds"] < 1000
        with h5py.File(snap, "a") as f:
            f.attrs["seconds"] = 1000.0

    rows = _train_then_resume(tmp_path, pretend_long)
    assert [it for it, _ in rows if it > 6] and all(s >= 1000 for it, s in rows if it > 6)
    assert all(s < 1000 for it, s in rows if it <= 6)


def test_an_older_snapshot_goes_on_from_the_metrics(tmp_path):
    def older(snap, run_dir):
        with h5py.File(snap, "a") as f:
            del f.attrs["seconds"]
        text = (run_dir / "metrics.csv").read_text().splitlines()
        rows = list(csv.DictReader(text))
        for row in rows:
            row["seconds"] = str(500 + int(row["iter"]))
        with open(run_dir / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, rows[0].keys())
            writer.writeheader()
            writer.writerows(rows)

    rows = _train_then_resume(tmp_path, older)
    later = [s for it, s in rows if it > 6]
    assert later and all(s >= 506 for s in later)
    assert [s for _, s in rows] == sorted(s for _, s in rows)
