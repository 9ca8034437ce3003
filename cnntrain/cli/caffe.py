"""import-prototxt: Caffe nets, solvers and HDF5 weights into cnntrain."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from cnntrain.cli import EXIT_CODES, main, run_or_exit
from cnntrain.cli.output import JSON, QUIET, echo_json, style


@main.command("import-prototxt", epilog=EXIT_CODES)
@click.argument("net", type=click.Path(dir_okay=False))
@click.argument("solver", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The cnntrain config to write (YAML).")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Caffe weights, a .caffemodel.h5 (HDF5, data/<layer>/<i>) or a binary "
                   ".caffemodel (needs protobuf: the caffe extra): also write a cnntrain "
                   "snapshot of them next to the config (OUTPUT with .h5).")
@click.option("--skip-unsupported", is_flag=True,
              help="Leave out layers of types cnntrain lacks (listed) instead of failing; a "
                   "skipped one-in one-out layer is bypassed.")
@click.option("--name", help="Run name in the config [default: OUTPUT's file name].")
@QUIET
@JSON
def import_prototxt(net, solver, output, weights, skip_unsupported, name, quiet, as_json):
    """Convert a Caffe NET prototxt (and SOLVER prototxt) to a cnntrain config.

    Layer types cnntrain has are converted field by field. Whatever has no cnntrain
    equivalent is listed on stderr and as comments at the top of the YAML, never
    dropped silently; a layer type cnntrain lacks is an error unless
    --skip-unsupported. A Data layer reading a CIFAR LMDB/LevelDB becomes
    `dataset: cifar10` (or cifar100) with the split of its phase, and `mean_file`
    becomes `mean_image: true`. Legacy V1 nets (`layers { }`) must be upgraded first.

    \b
    Examples:
      cnntrain import-prototxt cifar10_quick_train_test.prototxt \\
          cifar10_quick_solver.prototxt -o cifar10_quick.yaml
      cnntrain import-prototxt net.prototxt solver.prototxt -o net.yaml \\
          --weights net_iter_5000.caffemodel.h5
      cnntrain import-prototxt deploy.prototxt -o net.yaml \\
          --weights bvlc_model.caffemodel
      cnntrain test --snapshot net.h5
    """
    from cnntrain.config import load_experiment
    from cnntrain.errors import ConfigError
    from cnntrain.tools.caffe_import import import_caffe, weights_to_snapshot

    out = Path(output)
    result = run_or_exit(import_caffe, net, solver, name=name or out.stem,
                         skip_unsupported=skip_unsupported)
    report = result.report
    run_or_exit(_write, out, result.yaml_text)
    try:
        exp = load_experiment(out)   # as cnntrain will read it, with its line numbers
    except ConfigError as err:
        _print_report(report, quiet=True)
        click.echo(f"error: wrote {out}, but it is not a valid cnntrain config (edit it by "
                   f"hand): {err}", err=True)
        sys.exit(err.exit_code)
    snapshot = None
    filled = []
    if weights:
        snapshot = out.with_suffix(".h5")
        filled = run_or_exit(weights_to_snapshot, exp, weights, snapshot, report)
    if as_json:
        echo_json({"config": str(out), "snapshot": str(snapshot) if snapshot else None,
                   "layers": len(result.config["net"]["layer"]),
                   "weights_filled": filled, "unsupported": report.unsupported,
                   "notes": report.notes})
        return
    _print_report(report, quiet)
    missing = f", {len(report.unsupported)} item(s) not imported" if report.unsupported else ""
    click.echo(f"wrote {out} ({len(result.config['net']['layer'])} layers{missing})")
    if snapshot:
        click.echo(f"wrote {snapshot} (weights of {len(filled)} layer(s): {', '.join(filled)})")
        if not quiet:
            click.echo(f"test it with: cnntrain test --snapshot {snapshot}")


def _print_report(report, quiet: bool) -> None:
    for line in report.unsupported:
        click.echo(style("not imported: ", fg="yellow") + line, err=True)
    if not quiet:
        for line in report.notes:
            click.echo(f"note: {line}", err=True)


def _write(path: Path, text: str) -> None:
    from cnntrain.errors import CnnTrainError
    from cnntrain.snapshot import atomic_write

    try:
        atomic_write(path, lambda tmp: tmp.write_text(text))
    except OSError as err:
        raise CnnTrainError(f"cannot write {path}: {err.strerror or err}") from None
