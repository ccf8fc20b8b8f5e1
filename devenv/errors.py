"""The local environment's one exception root: the host cannot run what was asked (a missing
tool, a node that will not start, a chart that will not install). Neither bad input nor a
transient failure, so it is its own kind under :class:`~healthnav.contracts.errors.HealthnavError`;
each raises with the command or fix to try in its message."""

from __future__ import annotations

from healthnav.contracts.errors import HealthnavError


class DevenvError(HealthnavError, RuntimeError):
    """The local cluster, node, images or toolchain could not do what was asked on this host."""
