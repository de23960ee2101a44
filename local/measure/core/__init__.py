"""The floor every measurement stands on: the request loops, the timed request and its one outcome
type, the machine's facts and CPU accounting, the default images, and the summary statistics.

- :mod:`.closed_loop`: worker threads, each sending one request after another (paced or back to back).
- :mod:`.open_loop`: requests started at scheduled times, never waiting for earlier answers.
- :mod:`.http_load`: closed-loop HTTP load from ``wrk`` (or a Python fallback) for the load test.
- :mod:`.requests`: one request through a backend, timed as its client waits, as an :class:`Outcome`.
- :mod:`.machine`: what the machine is, and how busy its CPUs were (one definition of busy).
- :mod:`.images`: the images the measurements send by default.
- :mod:`.stats`: percentiles of durations.
"""
