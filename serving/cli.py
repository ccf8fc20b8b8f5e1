"""``hnav serve --config FILE`` runs the app on a local Ray; ``hnav serve redflags TEXT`` shows the rules.

Only typer is imported at module level: ``hnav --help`` and the operator must not load Ray.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=False, invoke_without_command=True)


def load_config(path: Path):  # -> ServeAppConfig
    """Read a ServeAppConfig from YAML or JSON; errors name the file and the field."""
    import yaml
    from pydantic import ValidationError

    from healthnav.serving.config import ServeAppConfig

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"{path}: {exc}", param_hint="--config") from exc
    try:
        return ServeAppConfig.model_validate(data or {})
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise typer.BadParameter(f"{path}: {errors}", param_hint="--config") from exc


@app.callback()
def serve_command(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", "-c", help="ServeAppConfig YAML (camelCase keys)."),
    host: str = typer.Option("127.0.0.1", help="HTTP bind address of Ray Serve's proxy."),
    port: int = typer.Option(8000, help="HTTP port."),
    num_cpus: int | None = typer.Option(None, help="CPUs for the local Ray (default: all)."),
) -> None:
    """Run the serving app on a local Ray until interrupted."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)
    cfg = load_config(config)

    import signal
    import time

    from healthnav.serving.app import build_app
    from healthnav.serving.local import local_serve

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM (kubectl delete, docker stop) shuts Serve down like Ctrl-C

    with local_serve(
        build_app(cfg.to_dict()), host=host, port=port, num_cpus=num_cpus, log_to_driver=True
    ) as url:
        # Only now: ray.init installs its own SIGTERM handler, which exits at once, without the
        # shutdown that stops Serve and every Ray process this command started.
        signal.signal(signal.SIGTERM, stop)
        typer.echo(f"serving {cfg.model_name!r} ({cfg.engine}) on {url}/v1 (Ctrl-C stops)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


@app.command("redflags")
def redflags_command(
    text: str = typer.Argument(..., help="Symptom text, as a patient would type it."),
    history: str = typer.Option("", help="Medical history (adds cardiac history to chest pain)."),
) -> None:
    """Print what the deterministic red-flag layer finds, as one JSON object."""
    from healthnav.serving.redflags import red_flag_report

    typer.echo(json.dumps(red_flag_report(text, history=history)))
