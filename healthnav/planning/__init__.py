"""Capacity and cost planning for serving: it sizes a ModelServe, it reconciles nothing.

:mod:`~healthnav.planning.capacity` is the arithmetic (every price and throughput an input),
:mod:`~healthnav.planning.cli` the ``hnav plan`` command.
"""
