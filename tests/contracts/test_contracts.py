"""The platform's contracts (healthnav/contracts/): each one's shape, pinned where it is defined."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, Field, ValidationError

from healthnav.contracts.errors import (
    EXIT_CONFIG_ERROR,
    EXIT_RETRYABLE,
    ConfigurationError,
    HealthnavError,
    RetryableError,
    exit_code_for,
)
from healthnav.contracts.models import ModelSourceError, cache_dir, materialize
from healthnav.contracts.probes import PROBES_FILE, AdapterProbes, Probe, judge
from healthnav.contracts.progress import PROGRESS_KEY, TrainingProgress
from healthnav.contracts.run_output import RunOutput
from healthnav.contracts.uris import StorageURI, check_uri, is_hub_id
from healthnav.contracts.validation import describe_validation_error, validation_problems

pytestmark = pytest.mark.unit


def test_the_two_kinds_of_error_and_their_exit_codes() -> None:
    assert issubclass(ConfigurationError, HealthnavError) and issubclass(ConfigurationError, ValueError)
    assert issubclass(RetryableError, HealthnavError) and issubclass(RetryableError, RuntimeError)
    assert exit_code_for(ModelSourceError("x")) == EXIT_CONFIG_ERROR == 78
    assert exit_code_for(RetryableError("x")) == exit_code_for(KeyError("x")) == EXIT_RETRYABLE


def test_storage_uris_parse_join_and_refuse_other_schemes() -> None:
    uri = StorageURI.parse("s3://models/finetunes")
    assert (uri.scheme, uri.bucket, uri.key) == ("s3", "models", "finetunes")
    assert str(uri.as_prefix().join("ns", "job/")) == "s3://models/finetunes/ns/job/"
    assert StorageURI.parse("/data/x").local_path == Path("/data/x")
    for bad in ("http://169.254.169.254/", "s3://A/x", "file://host/x"):
        with pytest.raises(ValueError):
            StorageURI.parse(bad)
    with pytest.raises(ValueError, match="schemes are refused"):
        check_uri("https://example.com/model")
    with pytest.raises(ValueError, match=r"'\.\.'"):
        check_uri("s3://models/a/../b")
    assert is_hub_id("HuggingFaceTB/SmolLM2-135M-Instruct") and not is_hub_id("s3://models/x")


def test_run_output_layout_is_the_designs() -> None:
    run = RunOutput.for_job("s3://models/finetunes", "team-a", "triage-v3")
    base = "s3://models/finetunes/team-a/triage-v3/"
    assert str(run) == base
    assert str(run.adapter) == base + "adapter/"
    assert str(run.checkpoints) == base + "checkpoints/"
    assert str(run.metrics) == base + "metrics.json"
    assert str(run.eval_metrics) == base + "eval/metrics.json"
    assert RunOutput.parse(base.rstrip("/")) == run


def test_progress_payload_round_trips_through_the_configmap() -> None:
    progress = TrainingProgress.at(
        step=250, total_steps=200, epoch=1.5, loss=float("nan"), tokens_per_second=812.54, eta_seconds=12.4
    )
    assert (progress.step, progress.percent, progress.loss, progress.eta_seconds) == (200, 100.0, None, 12)
    patch = progress.configmap_patch()
    assert set(patch["data"]) == {PROGRESS_KEY}
    assert TrainingProgress.from_configmap(patch["data"]) == progress
    assert TrainingProgress.from_configmap({PROGRESS_KEY: '{"step": -1}'}) is None  # untrusted input
    assert TrainingProgress.from_configmap({PROGRESS_KEY: '{"step": 3, "evil": "x"}'}) == TrainingProgress(
        step=3
    )


def test_validation_errors_name_the_path_and_never_the_value() -> None:
    class Training(BaseModel):
        epochs: int = Field(gt=0)

    class Spec(BaseModel):
        training: Training

    with pytest.raises(ValidationError) as err:
        Spec.model_validate({"training": {"epochs": -7}})
    assert validation_problems(err.value, root="spec") == [
        "spec.training.epochs: Input should be greater than 0"
    ]
    message = describe_validation_error(err.value)
    assert message == "training.epochs: Input should be greater than 0" and "-7" not in message


def test_materialize_checks_local_models_and_caches_by_uri(tmp_path: Path) -> None:
    assert materialize("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    model = tmp_path / "model"
    model.mkdir()
    with pytest.raises(ModelSourceError, match=r"baseModel: .* has no config.json"):
        materialize(str(model))
    (model / "config.json").write_text("{}")
    assert materialize(f"file://{model}") == str(model)
    with pytest.raises(ModelSourceError, match="adapter: "):
        materialize(str(tmp_path / "missing"), field="adapter")
    one, other = cache_dir("s3://m/a/", tmp_path), cache_dir("s3://m/b/", tmp_path)
    assert one.parent == other.parent == tmp_path / "models" and one != other


# --- adapter probes (healthnav/contracts/probes.py) --------------------------------------------


def _probes(adapter: list[float], base: list[float]) -> AdapterProbes:
    probe = Probe(
        text="prompt and answer", tokens=len(adapter) + 2, adapter_logprobs=adapter, base_logprobs=base
    )
    return AdapterProbes(probes=[probe], precision="float32")


def _served(values: list[float]) -> list[float | None]:
    return [None, -4.0, *values]  # the unscored first token and a prompt token, then the answer


def test_probes_accept_the_adapter_and_refuse_its_base_model() -> None:
    probes = _probes(adapter=[-0.5, -1.0, -0.2], base=[-3.0, -2.5, -4.0])
    assert judge(probes, [_served([-0.5, -1.0, -0.2])]).ok
    ignored = judge(probes, [_served([-3.0, -2.5, -4.0])])  # an engine that skipped the LoRA
    assert not ignored.ok and ignored.to_base == 0 and "answers differently" in ignored.message


def test_probes_accept_an_adapter_moved_by_precision_but_nearer_itself_than_its_base() -> None:
    """QLoRA: trained over a 4-bit base, served over a 16-bit one."""
    probes = _probes(adapter=[-0.5, -1.0, -0.2], base=[-3.0, -2.5, -4.0])
    assert judge(probes, [_served([-0.8, -1.3, -0.5])]).ok
    assert not judge(probes, [_served([-1.9, -1.9, -2.0])]).ok  # halfway to the base: not this adapter


def test_probes_of_an_adapter_that_barely_moved_its_base_pass_within_tolerance() -> None:
    probes = _probes(adapter=[-1.0, -2.0], base=[-1.02, -2.01])
    assert judge(probes, [_served([-1.03, -1.98])]).ok


def test_probes_name_a_tokenizer_mismatch_and_missing_scores() -> None:
    probes = _probes(adapter=[-1.0], base=[-2.0])
    assert "tokenizer differs" in judge(probes, [[None, -1.0]]).message
    assert not judge(probes, [None]).ok


def test_probes_round_trip_through_the_adapter_directory(tmp_path: Path) -> None:
    assert AdapterProbes.read(tmp_path) is None  # an adapter trained without them
    probes = _probes(adapter=[-1.0], base=[-2.0])
    probes.write(tmp_path)
    assert AdapterProbes.read(tmp_path) == probes
    assert '"adapterLogprobs"' in (tmp_path / PROBES_FILE).read_text()
