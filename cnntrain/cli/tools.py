"""gradcheck, plot and predict: tools around a config or a run.

Their output follows :mod:`cnntrain.cli.output`.
"""
from __future__ import annotations

import click

from cnntrain.cli import DATA_DIR, DEVICE, EXIT_CODES, main, run_or_exit
from cnntrain.cli.output import JSON, QUIET, echo_json, print_summary, style
from cnntrain.errors import CnnTrainError

# ------------------------------------------------------------------------- gradcheck
@main.command(epilog=EXIT_CODES + "\n\n\bExit code 1 also means: a gradient exceeded --tol.")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--layer", metavar="NAME", help="Check one layer (on random bottoms of its shapes "
                                              "in the net) instead of the whole net.")
@click.option("--tol", default=1e-5, show_default=True, type=click.FloatRange(min=0),
              help="Largest relative error |a-n|/max(|a|,|n|,1e-3) allowed.")
@click.option("--batch", default=2, show_default=True, type=click.IntRange(min=1),
              help="Batch size of the Input layers that replace the Data layers.")
@click.option("--max-elements", default=50, show_default=True, type=click.IntRange(min=0),
              help="Check at most this many random elements of each array (0: all).")
@click.option("--eps", default=1e-6, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Finite-difference step.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the random inputs and of the elements checked.")
@click.option("--no-retry", is_flag=True,
              help="Do not re-difference misses with smaller steps (see above).")
@QUIET
@JSON
def gradcheck(config, layer, tol, batch, max_elements, eps, seed, no_retry, quiet, as_json):
    """Check the gradients of CONFIG's TRAIN net against finite differences.

    The net is built in float64 with its Data layers replaced by Input layers of
    the same shapes (no dataset needed): random inputs spread over the range the
    transform produces, random valid labels, and the config's initial weights.
    Prints the relative error of every parameter and input array.

    An element whose error exceeds --tol is differenced again with steps eps/10
    and eps/100 and the closest difference counts: a ReLU or max-pool kink within
    eps of some activation causes such isolated misses; a wrong gradient stays wrong.

    \b
    Examples:
      cnntrain gradcheck configs/cifar10_quick.yaml
      cnntrain gradcheck configs/cifar10_quick.yaml --layer conv2 --max-elements 0
      cnntrain gradcheck my_net.yaml --tol 1e-6 --json
    """
    from cnntrain.config import load_experiment
    from cnntrain.tools.gradcheck import gradcheck_experiment

    exp = run_or_exit(load_experiment, config)
    results = run_or_exit(gradcheck_experiment, exp, layer=layer, batch=batch,
                          max_elements=max_elements or None, eps=eps, seed=seed,
                          retry_above=None if no_retry else tol)
    bad = [r for r in results if not r.ok(tol)]
    target = f"layer '{layer}'" if layer else f"net '{exp.net.name}'"
    if as_json:
        echo_json({"config": str(config), "target": target, "tol": tol, "eps": eps,
                   "batch": batch, "ok": not bad,
                   "results": [{"name": r.name, "size": r.size,
                                "checked": r.size if r.checked is None else r.checked,
                                "retried": r.retried, "max_rel_err": r.max_rel_err,
                                "max_abs_err": r.max_abs_err, "worst_index": list(r.worst_index),
                                "analytic": r.analytic, "numeric": r.numeric,
                                "ok": r.ok(tol)} for r in results]})
    else:
        if not quiet:
            click.echo(f"gradient check of {target} ({exp.file}): TRAIN phase, float64, "
                       f"batch {batch}, eps {eps:g}, tol {tol:g}")
            width = max(len(r.name) for r in results)
            click.echo(f"{'array':<{width}}  {'checked':>15}  {'max rel err':>11}  "
                       f"{'max abs err':>11}")
            for r in results:
                checked = f"{r.size if r.checked is None else r.checked}/{r.size}"
                mark = style("ok", fg="green") if r.ok(tol) else style("FAIL", fg="red", bold=True)
                extra = f"  ({r.retried} retried)" if r.retried else ""
                click.echo(f"{r.name:<{width}}  {checked:>15}  {r.max_rel_err:>11.2e}  "
                           f"{r.max_abs_err:>11.2e}  {mark}{extra}")
        for r in bad:
            click.echo(style(f"FAIL {r}", fg="red"))
        if not bad:
            click.echo(style(f"all {len(results)} arrays within tol {tol:g}", fg="green"))
    if bad:
        run_or_exit(_fail, f"{len(bad)} of {len(results)} arrays exceed tol {tol:g}: "
                           + ", ".join(r.name for r in bad))


def _fail(message: str) -> None:
    raise CnnTrainError(message)


# ------------------------------------------------------------------------- plot
@main.command(epilog=EXIT_CODES)
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(), metavar="RUN_DIR...")
@click.option("-o", "--output", default="curves.png", show_default=True,
              type=click.Path(dir_okay=False), help="Image to write (.png, .svg or .pdf).")
@QUIET
@JSON
def plot(run_dirs, output, quiet, as_json):
    """Plot training loss, test loss and test accuracy of runs, overlaid.

    One row against iterations and one against wall time (the seconds column of
    metrics.csv). Needs matplotlib: pip install 'cnntrain[plot]'.

    \b
    Examples:
      cnntrain plot runs/cifar10_quick
      cnntrain plot runs/cifar10_quick runs/lenet_cifar10 -o compare.png
    """
    from cnntrain.tools.plot import plot_run_dirs

    path, runs = run_or_exit(plot_run_dirs, run_dirs, output)
    if as_json:
        echo_json({"output": str(path), "runs": [
            {"run": r.name, "path": str(r.path),
             "points": {k: len(v) for k, v in r.series.items()}} for r in runs]})
        return
    if not quiet:
        for r in runs:
            counts = ", ".join(f"{len(v)} {k}" for k, v in r.series.items()) or "no rows"
            click.echo(f"{r.name}: {counts}")
    click.echo(f"plot written to {path}")


# ------------------------------------------------------------------------- predict
@main.command(epilog=EXIT_CODES)
@click.option("--snapshot", required=True, type=click.Path(dir_okay=False),
              help="A snapshot written by cnntrain train (or by import-prototxt --weights).")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(), metavar="IMAGE_OR_DIR...")
@click.option("-k", "--top-k", default=5, show_default=True, type=click.IntRange(min=1),
              help="How many classes to show per image.")
@DATA_DIR
@QUIET
@JSON
def predict(snapshot, inputs, top_k, data_dir, quiet, as_json):
    """Classify images with a snapshot: the top classes and their probabilities.

    Inputs are PNG/JPEG files (needs Pillow: pip install 'cnntrain[image]'), .npy
    arrays of 0..255 pixel values (uint8 or float; H×W×3, 3×H×W, N×3×H×W or
    N×H×W×3), or folders of them. Images are resized to the net's input and get the
    TEST transform of the snapshot's config; a mean image is computed from the
    dataset (in --data-dir), which is also where class names come from.

    \b
    Examples:
      cnntrain predict --snapshot runs/cifar10_quick/snapshots/iter_5000.h5 cat.png
      cnntrain predict --snapshot model.h5 photos/ --top-k 3
      cnntrain predict --snapshot model.h5 batch.npy --json
    """
    from cnntrain.tools.predict import Predictor

    def run():
        predictor = Predictor(snapshot, data_dir, notify=lambda m: click.echo(m, err=True))
        return predictor.predict(inputs, top_k)

    predictions = run_or_exit(run)
    if as_json:
        echo_json([{"input": p.source, "top": [{"class": i, "name": name, "probability": prob}
                                               for i, name, prob in p.top]}
                   for p in predictions])
        return
    for p in predictions:
        if quiet:
            i, name, prob = p.top[0]
            click.echo(f"{p.source}\t{name}\t{prob:.4f}")
            continue
        click.echo(style(p.source, bold=True))
        for rank, (i, name, prob) in enumerate(p.top, 1):
            label = name if name == str(i) else f"{name} ({i})"
            click.echo(f"  {rank}. {prob:7.2%}  {label}")



# ------------------------------------------------------------------------- time
@main.command("time", epilog=EXIT_CODES)
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--iterations", default=20, show_default=True, type=click.IntRange(min=1),
              help="Timed training iterations.")
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(min=0),
              help="Untimed iterations first (buffers are allocated there).")
@click.option("--batch", type=click.IntRange(min=1),
              help="Batch size [default: the TRAIN Data layer's batch_size].")
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
              help="Override a config field first, as in train.")
@DEVICE
@QUIET
@JSON
def time_command(config, iterations, warmup, batch, overrides, device, quiet, as_json):
    """Time the training iteration of CONFIG's net, layer by layer (like caffe time).

    Forward and backward milliseconds of each layer, the solver update and the
    net's own bookkeeping add up to the measured iteration. Also: images/s, the
    GFLOP/s achieved in the GEMMs, and the share of time in GEMM, im2col/col2im and
    everything else. No dataset is read: the Data layers hold a fixed random
    batch. BLAS threads follow OMP_NUM_THREADS / OPENBLAS_NUM_THREADS.

    \b
    Examples:
      cnntrain time configs/cifar10_quick.yaml
      OMP_NUM_THREADS=1 cnntrain time configs/lenet_cifar10.yaml --batch 64 --iterations 50
      cnntrain time configs/fast94_cifar10.yaml --device gpu
    """
    from cnntrain.backend import open_device
    from cnntrain.config.overrides import load_experiment_with
    from cnntrain.tools.timing import blas_threads, format_report, time_experiment

    exp = run_or_exit(load_experiment_with, config, overrides)
    where = run_or_exit(open_device, device)
    report = run_or_exit(time_experiment, exp, iterations=iterations, warmup=warmup,
                         batch=batch, device=where)
    if as_json:
        echo_json({"config": exp.file, "threads": blas_threads() if where.is_cpu else None,
                   **report.as_dict()})
    elif quiet:
        click.echo(f"{report.total_ms:.1f} ms per iteration, {report.images_per_s:.0f} images/s")
    else:
        for line in format_report(report, blas_threads() if where.is_cpu else str(where)):
            click.echo(line)



# ------------------------------------------------------------------------- summary
@main.command(epilog=EXIT_CODES)
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
              help="Override a config field first, as in train.")
@QUIET
@JSON
def summary(config, overrides, quiet, as_json):
    """Each layer's output shape, parameter count and forward MACs, then the totals
    and the activation memory of one batch; no dataset is read (the same as
    train --dry-run).

    \b
    Examples:
      cnntrain summary configs/cifar10_quick.yaml
      cnntrain summary configs/lenet_cifar10.yaml --set net.layer.cifar.data_param.batch_size=1
    """
    from cnntrain.config.overrides import load_experiment_with

    exp = run_or_exit(load_experiment_with, config, overrides)
    run_or_exit(print_summary, exp, as_json, quiet)
