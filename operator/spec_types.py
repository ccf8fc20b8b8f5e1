"""Field types both custom resources use: names, quantities, Secrets, model sources, tolerations.

FineTuneJob and ModelServe share these, so the rule for (say) a model URI or a toleration is
written once, as a pydantic model with its CEL twin next to it. URI grammar and the Python
checks come from :mod:`healthnav.contracts.uris`; the CEL rules here reuse its messages.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from healthnav.contracts.uris import (
    DOT_DOT_MESSAGE,
    MODEL_URI,
    NO_FILE_MESSAGE,
    OTHER_SCHEME_MESSAGE,
    check_uri,
)
from healthnav.operator.crdgen import cel, validations
from healthnav.schema import CamelModel

# Longest FineTuneJob name: it names the Job, whose pods carry it in a 63-character label, and
# derived objects append suffixes such as "-progress". ModelServe adapters refer to such names.
FINETUNEJOB_MAX_NAME_LENGTH = 52
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_NUMBER = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
# The Kubernetes resource.Quantity syntax (as controller-gen writes it for quantities).
QUANTITY = rf"^(\+|-)?{_NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_NUMBER}))?$"

# A scheme other than s3:// or file:// (http, https, gs, hf, ...) gets its own message: an
# http(s) URL fetched from inside the cluster could reach link-local or cloud metadata endpoints
# (169.254.169.254, metadata.google.internal), so remote models must be staged in S3 first.
NO_OTHER_SCHEME = cel(
    "!self.matches('^[A-Za-z][A-Za-z0-9+.-]*:') || self.startsWith('s3://') || self.startsWith('file:///')",
    OTHER_SCHEME_MESSAGE,
)
NO_DOT_DOT = cel("!self.contains('/../') && !self.endsWith('/..')", DOT_DOT_MESSAGE)
NO_FILE = cel("!self.startsWith('file:')", NO_FILE_MESSAGE)

MAX_URI_LENGTH = 1024


def uri_field(pattern: str, *rules: dict[str, Any]) -> Any:
    """A required URI field: non-empty, at most :data:`MAX_URI_LENGTH`, ``pattern`` (one of
    :mod:`healthnav.contracts.uris`' grammars) and the CEL ``rules`` that give its messages."""
    rules_extra = validations(*rules)
    return Field(min_length=1, max_length=MAX_URI_LENGTH, pattern=pattern, json_schema_extra=rules_extra)


Quantity = int | Annotated[str, Field(pattern=QUANTITY, max_length=64)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]


class SecretRef(CamelModel):
    """A Secret in the FineTuneJob's namespace whose keys become environment variables of the
    training pod (e.g. AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, HF_TOKEN). Omit it to use the
    pod's ServiceAccount identity (IRSA, GKE Workload Identity)."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """Name of the Secret."""


class ModelSource(CamelModel):
    """Where the base model's weights and tokenizer come from."""

    uri: str = uri_field(MODEL_URI, NO_OTHER_SCHEME, NO_DOT_DOT)
    """s3://bucket/prefix/ or file:///path of a Hugging Face model directory, or a hub id (org/name)."""
    secret_ref: SecretRef | None = None
    """Credentials for the model's location (S3 keys or an HF_TOKEN for gated hub models)."""

    _uri = field_validator("uri")(classmethod(lambda cls, v: check_uri(v)))


class Toleration(CamelModel):
    """A pod toleration (core/v1 Toleration) so the pod may land on tainted GPU nodes."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.operator != 'Exists' || !has(self.value)",
                "value must be empty when operator is Exists",
                field_path=".value",
            ),
            cel(
                "has(self.key) || self.operator == 'Exists'",
                "a toleration without a key must use operator Exists",
                field_path=".operator",
            ),
        )
    )

    key: str | None = Field(default=None, max_length=317)
    """Taint key to tolerate; empty with operator Exists tolerates every taint."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """Equal matches key and value; Exists matches any value of key."""
    value: str | None = Field(default=None, max_length=63)
    """Taint value to match (operator Equal)."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches all effects."""
    toleration_seconds: int | None = Field(default=None, ge=0)
    """For NoExecute: how long the pod stays bound after the taint appears."""

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("value must be empty when operator is Exists")
        if self.key is None and self.operator != "Exists":
            raise ValueError("a toleration without a key must use operator Exists")
        return self
