"""The ``nanodet-deploy`` and ``nanodet-export`` apps: one typer command per module.

Command modules import the torch side (and other heavy packages) inside the command function
(the CLI is one of the agreed import seams), so runtime-side commands work where torch is not
installed and ``nanodet-deploy detect`` never loads it.
"""

from __future__ import annotations

import typer

from nanodet_deploy.cli import bench, detect, export, info, report
from nanodet_deploy.cli import eval as eval_cli
from nanodet_deploy.cli import train as train_cli

app = typer.Typer(
    name="nanodet-deploy",
    help="Train, export and run NanoDet detectors on mobile CPUs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main() -> None:
    """Train, export and run NanoDet detectors on mobile CPUs."""


app.command("info")(info.info)
app.command("train")(train_cli.train)
app.command("eval")(eval_cli.eval_model)
app.command("detect")(detect.detect)
app.command("bench")(bench.bench)
app.command("report")(report.report)
app.command("import-bench")(report.import_bench)
app.command("export")(export.export)

export_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
export_app.command()(export.export)
