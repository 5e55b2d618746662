"""Command line: a thin layer over the library (Detector, train, evaluate); no logic of its own.

`app` is the `synthcheck` command (the entry point `synthcheck.cli:app`; `python -m synthcheck.cli` runs it too).
The commands live in one module per group -- `train` (models, train, compare, crossval, stack, attribution),
`evaluate` (evaluate, robustness, calibrate), `predict` (predict, inspect), `explain` (explain, spectrum),
`serve` (export, serve), `data` (pairs, audit, build-data) -- and are registered here, in the order `--help` lists them.
Command modules import the library inside each command, so `synthcheck --help` does not load torch.
"""

from __future__ import annotations

import typer

from . import data, evaluate, explain, predict, serve, train
from .common import console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="SynthCheck: detect AI-generated images, explain the verdict, and say how sure it is.")


def _version(value: bool):
    if value:
        from .._version import __version__

        console.print(f"synthcheck {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")):
    """SynthCheck: detect AI-generated images, explain the verdict, and say how sure it is."""


for _command in (train.models, train.train, evaluate.evaluate, predict.predict, predict.inspect, explain.explain,
                 explain.spectrum, evaluate.robustness, evaluate.calibrate, data.audit, train.compare, serve.export,
                 serve.serve, data.pairs, data.build_data, train.attribution, train.crossval, train.stack):
    app.command()(_command)


def main():
    app()
