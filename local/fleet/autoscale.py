"""Target-tracking autoscaling: the one rule the real fleet (:mod:`local.fleet.fleet`) and the fleet
simulation (:mod:`local.measure.scenario.fleet_sim`) both follow.

Every evaluation period the autoscaler measures the fleet's utilisation (work done over the capacity
of the instances taking traffic) and asks for the size that would have run at the target: ``desired
= ceil(demand / target)``, where ``demand`` is the work in instances' worth (``current x
utilisation``) plus the requests still waiting beyond what the instances were serving (a saturated
fleet queues, and its utilisation alone cannot exceed 1). It scales out at once by the difference
(instances still booting count as already there) and scales in only when utilisation is below the
target and the scale-in cooldown has passed since the last scale-in, as AWS's target tracking does
(https://docs.aws.amazon.com/autoscaling/application/userguide/target-tracking-scaling-policy-overview.html).
"""

from __future__ import annotations

import math
from typing import NamedTuple

# Target tracking looks at one-minute metrics and, by default, waits 300 s between scale-ins (see above).
EVALUATION_S = 60.0
SCALE_IN_COOLDOWN_S = 300.0


class Scaling(NamedTuple):
    """One evaluation's outcome: the size asked for and the change made (+ launch, - stop, 0 none)."""

    desired: int
    change: int


def scaling_step(*, routable: int, booting: int, utilisation: float, demand: float, target: float,
                 minimum: int, maximum: int, since_scale_in_s: float, cooldown_s: float = SCALE_IN_COOLDOWN_S) -> Scaling:
    """The target-tracking decision for one evaluation period (a pure function).

    ``routable`` instances took traffic during the period and ``booting`` ones were launched but are
    not taking it yet; ``utilisation`` is the routable instances' work over their capacity (0..1);
    ``demand`` the instances' worth of work asked for (``routable x utilisation`` plus the requests
    waiting beyond the workers, in instances); ``since_scale_in_s`` the time since the last scale-in
    (``math.inf`` if none). A positive change launches that many instances, a negative one stops
    that many routable ones.
    """
    desired = min(maximum, max(minimum, math.ceil(demand / target)))
    if desired > routable + booting:
        return Scaling(desired, desired - routable - booting)
    if desired < routable and since_scale_in_s >= cooldown_s and utilisation < target:
        return Scaling(desired, desired - routable)
    return Scaling(desired, 0)
