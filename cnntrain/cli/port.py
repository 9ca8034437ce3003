"""port: turn CIFAR-10/100 into native HDF5 files and write the configs that read them."""
from __future__ import annotations

from pathlib import Path

import click

from cnntrain.cli import DATA_DIR, EXIT_CODES, main, run_or_exit
from cnntrain.cli.output import JSON, QUIET, echo_json


@main.command(epilog=EXIT_CODES)
@click.argument("dataset", type=click.Choice(["cifar10", "cifar100"]))
@click.option("--from", "from_path", type=click.Path(),
              help="An official archive (.tar.gz, python or binary) or folder to convert "
                   "[default: what is in --data-dir, else download the official archive].")
@DATA_DIR
@click.option("--labels", type=click.Choice(["fine", "coarse"]), default="fine",
              show_default=True,
              help="CIFAR-100: configs for the 100 classes or the 20 superclasses (the "
                   "files keep both).")
@click.option("--configs-dir", default="configs", show_default=True,
              type=click.Path(file_okay=False), help="Where the configs are written.")
@click.option("--overwrite-configs", is_flag=True,
              help="Replace configs that differ from the templates (edited by hand).")
@QUIET
@JSON
def port(dataset, from_path, data_dir, labels, configs_dir, overwrite_configs, quiet, as_json):
    """Convert DATASET to native HDF5 files in the data folder and write its configs.

    Writes <data-dir>/DATASET-train.h5 and DATASET-test.h5 (uint8 images, fine and
    coarse labels, class names, the training set's mean image and channel mean/std,
    the source's MD5), then configs/cifar100_quick.yaml and cifar100_vgg.yaml
    (cifar100_coarse_* with --labels coarse; cifar10_native_quick.yaml for cifar10),
    whose output count comes from the dataset. A second run checks the files and the
    source's MD5 and skips the conversion.

    \b
    Examples:
      cnntrain port cifar100
      cnntrain port cifar100 --from ~/Downloads/cifar-100-python.tar.gz
      cnntrain port cifar100 --labels coarse
      cnntrain port cifar10 --data-dir data
      cnntrain port cifar10 --json
    """
    from cnntrain.data.cifar import resolve_data_dir
    from cnntrain.data.port import port as run_port

    say = (lambda line: None) if quiet else \
        (lambda line: click.echo(line, err=True)) if as_json else click.echo
    directory = resolve_data_dir(data_dir)
    result = run_or_exit(run_port, dataset, data_dir=directory,
                         from_path=Path(from_path) if from_path else None, labels=labels,
                         configs_dir=Path(configs_dir), overwrite_configs=overwrite_configs,
                         notify=say)
    given = click.get_current_context().get_parameter_source("data_dir")
    extra = f" --data-dir {data_dir}" if given == click.core.ParameterSource.COMMANDLINE else ""
    command = f"cnntrain train {result.configs[0]}{extra}" if result.configs else None
    if as_json:
        echo_json({"dataset": dataset, "converted": result.converted,
                   "seconds": round(result.seconds, 2),
                   "files": {split: str(path) for split, path in result.files.items()},
                   "configs": [str(c) for c in result.configs], "train": command})
        return
    verb = "converted" if result.converted else "checked"
    click.echo(f"{verb} {dataset} in {result.seconds:.1f} s"
               + (f": {', '.join(str(p) for p in result.files.values())}" if quiet else ""))
    if command and not quiet:
        click.echo(f"train with: {command}")
