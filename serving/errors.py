"""HTTP errors of the serving API, always in OpenAI's error shape (``{"error": {...}}``).

:class:`ApiError` is what a route raises; the app's exception handlers turn it, request
validation errors, engine refusals and anything unexpected into a JSON answer that names the
field at fault and never echoes the request.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from healthnav.contracts.errors import HealthnavError
from healthnav.serving import openai_api as oa
from healthnav.serving.messages import OVERLOADED, RETRY_AFTER_S, GenerationError


class ApiError(HealthnavError):
    """An error answered with OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    @classmethod
    def from_generation(cls, err: GenerationError) -> ApiError:
        """The answer for a refused generation; a 503 tells the client when to retry."""
        retry = {"Retry-After": str(RETRY_AFTER_S)} if err.status == 503 else None
        return cls(err.status, err.message, type=err.type, param=err.param, code=err.code, headers=retry)

    def response(self) -> JSONResponse:
        body = oa.error_body(self.message, type=self.type, param=self.param, code=self.code)
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def overloaded() -> ApiError:
    return ApiError.from_generation(OVERLOADED)


def timed_out() -> ApiError:
    return ApiError(504, "timed out waiting for the model", type="timeout_error")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": oa.ErrorResponse, "description": "Invalid request; the message names the field."},
    401: {"model": oa.ErrorResponse, "description": "Missing or wrong API key."},
    404: {"model": oa.ErrorResponse, "description": "Unknown model."},
    413: {"model": oa.ErrorResponse, "description": "Request body too large."},
    503: {
        "model": oa.ErrorResponse,
        "description": "Overloaded or not ready; retry after Retry-After seconds.",
    },
}
"""The error answers every route documents in OpenAPI."""
