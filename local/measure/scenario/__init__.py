"""Which one wins for my traffic? Lambda and a server fleet, simulated under a traffic shape or a
user's own arrivals, with figures measured on this machine (issue 13).

- :mod:`traffic`: built-in shapes and arrivals read from CSV, API Gateway and ALB access logs;
- :mod:`params`: latency distributions, Lambda's limits (each AWS figure with its source), a fleet of
  an instance type's lanes and how its CPU layout carries the service time measured here;
- :mod:`calibrate`: where every figure comes from (tune, bench, a real function's REPORT lines, or
  measured now), said for each;
- :mod:`lambda_sim`, :mod:`fleet_sim`: the discrete-event models (SimPy);
- :mod:`results`: per-request outcomes, summaries with the ``--json`` key names, the verdict;
- :mod:`deployment`: what to deploy on the server side (the record the deploy files are written from);
- :mod:`run`: a scenario end to end, month scale through representative days, the comparison;
- :mod:`breakeven`: every Lambda option (the scenario's :class:`local.measure.cost.LambdaOption`) and the fleet over
  request rates, steady and bursty, and where the cheapest one changes;
- :mod:`report`: Markdown tables and PNG charts; :mod:`benchmark`: speed and accuracy.

``local.measure.replay`` checks the simulation against real runs on this machine.
"""
