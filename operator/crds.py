"""Every CRD healthnav ships (``hnav operator crds`` writes them to the chart).

The list lives here, not in :mod:`~healthnav.operator.crdgen`: the spec modules import the
generator's helpers (``cel``, ``CRDSpec``), so the generator must not import them back. A new
kind adds its spec module's :class:`~healthnav.operator.crdgen.CRDSpec` to :func:`all_crds`.
"""

from __future__ import annotations

from healthnav.operator.crdgen import CRDSpec
from healthnav.operator.finetunejob_spec import FINETUNEJOB_CRD
from healthnav.operator.modelserve_spec import MODELSERVE_CRD


def all_crds() -> list[CRDSpec]:
    """Every CRD healthnav ships, in the order the chart installs them."""
    return [FINETUNEJOB_CRD, MODELSERVE_CRD]
