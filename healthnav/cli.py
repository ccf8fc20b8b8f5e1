"""``hnav``: the command line of healthnav. Each component contributes its own commands.

Component CLIs import only typer at module level; heavy libraries (torch, ray) load inside
the command that needs them, so ``hnav --help`` and the operator stay fast and small.
"""

from __future__ import annotations

import typer

from healthnav.datapipe.cli import app as data_app
from healthnav.devenv.cli import app as dev_app
from healthnav.evaluation.cli import eval_command
from healthnav.models.cli import app as models_app
from healthnav.operator.cli import app as operator_app
from healthnav.planning.cli import plan_command
from healthnav.serving.cli import app as serve_app
from healthnav.trainer.cli import train_command

app = typer.Typer(
    name="hnav",
    help="healthnav: fine-tune (QLoRA) and serve (Ray Serve + vLLM) medical language models on Kubernetes.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(data_app, name="data", help="Build, stage, verify and inspect training datasets.")
app.command("train", help="Fine-tune a base model with QLoRA/LoRA from a trainer config file.")(train_command)
app.command("eval", help="Evaluate a model (and adapter) on a dataset's test split; gates and reports.")(
    eval_command
)
app.add_typer(models_app, name="models", help="Packaged base models: list, prepare (GGUF to a HF directory).")
app.add_typer(serve_app, name="serve", help="Run the Ray Serve application locally; red-flag rules.")
app.command("plan", help="Size a ModelServe for N assessments a month: replicas, cost, break-even.")(
    plan_command
)
app.add_typer(operator_app, name="operator", help="Run the kopf operator.")
app.add_typer(dev_app, name="dev", help="Local development: a real control plane and S3 server on 127.0.0.1.")


@app.command("demo")
def demo_command() -> None:
    """The whole platform end to end on this machine (data, QLoRA, eval, Ray Serve, operator)."""
    from healthnav.demo import run_demo

    run_demo()


if __name__ == "__main__":
    app()
