"""Measuring: what the two approaches do under load, real and simulated.

``core/`` is the floor every measurement stands on (the request loops, the timed request and its one
outcome type, the machine's CPU accounting, the default images, the statistics). On it, one module or
package per measurement: ``bench/``, ``tune/``, ``evaluate``, ``monitor``, ``soak``, ``throughput``,
``loadtest`` (with its ``peers/``), ``cost``, ``scenario/`` (the simulator) and ``replay`` (the
simulation checked against real runs). Nothing here renders: :mod:`local.report` does.
"""
