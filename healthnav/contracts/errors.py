"""The platform's exception hierarchy: one root, and the two kinds the platform acts on.

Every healthnav exception derives from :class:`HealthnavError`. What a caller does about one
depends only on which of two kinds it is, never on the concrete class:

* :class:`ConfigurationError` — the input is wrong (a config field, a dataset, a request):
  retrying the same thing fails the same way. A command exits :data:`EXIT_CONFIG_ERROR` (78,
  sysexits' EX_CONFIG, on which a FineTuneJob's podFailurePolicy fails the Job at once), an
  HTTP API answers 4xx, a controller writes the message into status instead of retrying.
* :class:`RetryableError` — something outside the input failed (a timeout, an unreachable
  endpoint): another attempt may succeed. A command exits :data:`EXIT_RETRYABLE` (1, retried
  up to a Job's backoffLimit), an HTTP API answers 5xx with ``Retry-After``.

Anything else (a bug, an exception from a library) is treated as retryable: a retry costs
little, and a crash loop is visible.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RETRYABLE = 1
EXIT_CONFIG_ERROR = 78  # sysexits.h EX_CONFIG
EXIT_PREEMPTED = 143  # SIGTERM: a checkpoint was written, the next attempt resumes


class HealthnavError(Exception):
    """Root of every exception healthnav raises on purpose; the message names what and where."""


class ConfigurationError(HealthnavError, ValueError):
    """The input is wrong (configuration, data, request): retrying cannot help. Exit 78, HTTP 4xx."""


class RetryableError(HealthnavError, RuntimeError):
    """A transient failure outside the input (timeout, connection): another attempt may succeed."""


def exit_code_for(exc: BaseException) -> int:
    """The exit status a command reports for ``exc``: 78 for configuration errors, else 1."""
    return EXIT_CONFIG_ERROR if isinstance(exc, ConfigurationError) else EXIT_RETRYABLE
