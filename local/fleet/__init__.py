"""A real fleet on this machine: K ``local serve`` instances, each confined to its CPU share, behind
HAProxy (``balance leastconn``, health checks on ``/health``), fixed or autoscaled by the
simulation's target-tracking rule.

- :mod:`local.fleet.autoscale`: the target-tracking rule, one pure function (the simulation's too).
- :mod:`local.fleet.haproxy`: HAProxy's configuration, process and runtime API.
- :mod:`local.fleet.instance`: one confined ``local serve`` instance and its life.
- :mod:`local.fleet.fleet`: :class:`Fleet`, the whole: start, status, kill, autoscale, stop.
"""

from local.fleet.autoscale import Scaling, scaling_step
from local.fleet.fleet import AutoscalePolicy, Fleet, FleetStatus, InstanceInfo, Kill

__all__ = ["AutoscalePolicy", "Fleet", "FleetStatus", "InstanceInfo", "Kill", "Scaling", "scaling_step"]
