"""``hnav train``: the training container's entrypoint.

Only typer is imported at module level (the operator and ``hnav --help`` load this file);
torch and transformers load inside the command.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import typer

from healthnav.contracts.errors import EXIT_CONFIG_ERROR, ConfigurationError
from healthnav.trainer.config import TERMINATION_LOG, TrainerConfig


class ConfigFileError(ConfigurationError):
    """The config file is unreadable or does not match the TrainerConfig schema."""


def load_config(path: Path) -> TrainerConfig:
    """Parse YAML or JSON into a TrainerConfig; errors name the file and each offending field."""
    import yaml
    from pydantic import ValidationError

    from healthnav.contracts.validation import describe_validation_error

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        raw: Any = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigFileError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"
        ) from exc
    if not isinstance(raw, dict):
        raise ConfigFileError(f"{path}: expected a mapping of trainer settings, got {type(raw).__name__}")
    try:
        return TrainerConfig.model_validate(raw)
    except ValidationError as exc:
        problems = describe_validation_error(exc)
        raise ConfigFileError(f"{path}: invalid trainer config: {problems}") from exc


def train_command(
    config: Path = typer.Option(..., "--config", "-c", help="Trainer config (YAML/JSON, camelCase)."),
    log_level: str = typer.Option("INFO", "--log-level", help="Python log level for messages on stderr."),
) -> None:
    """Fine-tune a base model from a trainer config.

    Progress goes to stdout as one JSON object per line; logs go to stderr. Exit codes:
    0 done, 78 configuration/data error (not retryable), 143 preempted (checkpoint written),
    1 any other failure (retryable: the next attempt resumes from the last checkpoint).
    """
    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg = load_config(config)
    except ConfigFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        from healthnav.trainer.report import write_termination_message

        write_termination_message(str(exc), TERMINATION_LOG)
        raise typer.Exit(code=EXIT_CONFIG_ERROR) from exc

    from healthnav.trainer.train import run

    result = run(cfg)
    if result.exit_code:
        typer.echo(f"error: {result.message}", err=True)
    else:
        typer.echo(result.message, err=True)
    raise typer.Exit(code=result.exit_code)
