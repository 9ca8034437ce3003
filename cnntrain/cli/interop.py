"""export and schema: nets and configs out to other tools (ONNX, JSON Schema)."""
from __future__ import annotations

import click

from cnntrain.cli import EXIT_CODES, main, run_or_exit
from cnntrain.cli.output import JSON, QUIET, echo_json


def _shape(dims: list) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


@main.command(epilog=EXIT_CODES)
@click.option("--snapshot", required=True, type=click.Path(dir_okay=False),
              help="A snapshot written by cnntrain (its config gives the TEST net).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The ONNX file to write.")
@QUIET
@JSON
def export(snapshot, output, quiet, as_json):
    """Write the TEST net of a snapshot as an ONNX model (opset 17).

    The model takes what the net's Data layer hands on: transformed images
    (N, C, H, W: mean subtracted, scaled, centre-cropped as the config says), any
    batch size N. It gives the net's outputs (the scores the loss and accuracy layers
    read; those layers are left out) and `prob`, their softmax, as `cnntrain predict`
    prints them. Test-time views (transform_param.test_views) are not in the graph.
    Every layer is written exactly (Caffe's pooling rounding and divisors included); a
    layer with no exact ONNX form is an error naming it. Needs the onnx package
    (pip install 'cnntrain[onnx]').

    \b
    Examples:
      cnntrain export --snapshot runs/cifar10_quick/snapshots/iter_5000.h5 -o quick.onnx
      python -c "import onnxruntime as ort, numpy as np; \\
        s = ort.InferenceSession('quick.onnx'); \\
        print(s.run(['prob'], {'data': np.zeros((1, 3, 32, 32), np.float32)}))"
    """
    from cnntrain.tools.onnx_export import export_snapshot

    result = run_or_exit(export_snapshot, snapshot, output)
    if as_json:
        echo_json({"onnx": result.path, "opset": result.opset, "nodes": result.nodes,
                   "inputs": dict(result.inputs), "outputs": dict(result.outputs)})
        return
    click.echo(f"wrote {result.path} (ONNX opset {result.opset}, {result.nodes} nodes)")
    if not quiet:
        for kind, values in (("input", result.inputs), ("output", result.outputs)):
            for name, dims in values:
                click.echo(f"  {kind:6} {name} {_shape(dims)}")


@main.command(epilog=EXIT_CODES)
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the schema to this file instead of printing it.")
def schema(output):
    """Print the JSON Schema (draft 2020-12) of cnntrain's config files.

    Generated from the same field table the config checker uses, so it always matches
    this version: every field, its type, bounds, choices, default and doc, the
    *_param blocks of each layer type, and the fields each lr_policy needs. Point an
    editor's YAML support at it to complete and check configs as you type;
    `cnntrain train CONFIG --dry-run` stays the full check.

    \b
    Examples:
      cnntrain schema -o cnntrain.schema.json
      # then, first line of a config (VS Code's YAML extension, yaml-language-server):
      # yaml-language-server: $schema=cnntrain.schema.json
    """
    import json

    from cnntrain.config.json_schema import config_schema

    text = json.dumps(config_schema(), indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    run_or_exit(_write_text, output, text)
    click.echo(f"wrote {output}")


def _write_text(path, text: str) -> None:
    from pathlib import Path

    from cnntrain.errors import CnnTrainError, os_error_reason
    from cnntrain.snapshot import atomic_write

    try:
        atomic_write(Path(path), lambda tmp: tmp.write_text(text))
    except OSError as err:
        raise CnnTrainError(f"cannot write {path}: {os_error_reason(err)}") from None
