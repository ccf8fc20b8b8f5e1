"""Base model for every camelCase contract (CRD specs, trainer config, serve config).

Python code uses snake_case attributes; YAML, JSON and the Kubernetes API see camelCase,
the convention of Kubernetes resources. ``extra="forbid"`` turns a misspelt field into a
clear error naming it instead of a silently ignored setting.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    def to_dict(self, **kwargs: Any) -> dict[str, Any]:
        """JSON-ready dict with camelCase keys, the form written to ConfigMaps and CRs."""
        return self.model_dump(mode="json", by_alias=True, **kwargs)
