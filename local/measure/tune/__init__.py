"""Power tuning, locally: which Lambda memory size (and precision) is the cheapest fast enough?

For every memory size × precision, a fresh Lambda emulator (:mod:`local.emulator`) runs the real
handler inside a cgroup sized the way Lambda sizes a function (:mod:`local.cgroups`: CPU quota of
memory/1,769 vCPU, memory limit without swap; the handler picks its thread count from
``AWS_LAMBDA_FUNCTION_MEMORY_SIZE`` as on Lambda). Its first invoke is the cold start; then N warm
invokes give latency percentiles. The cgroup's own counters give peak memory, CPU throttling and
out-of-memory kills; :mod:`local.cost` turns the durations into a cost per million requests with
the cost view's price inputs; :func:`recommend` picks the cheapest configuration within a latency
budget and says why.

Every figure is EMULATED (see :data:`EMULATION_NOTE`). With a real function configured, the same
sweep also runs on AWS the way AWS Lambda Power Tuning does
(https://github.com/alexcasalboni/aws-lambda-power-tuning): set the function's memory with
``update_function_configuration``, wait for the update (``function_updated_v2``), invoke N+1 times
and read the durations from the REPORT line of each invoke's log tail; the original memory size is
restored afterwards.

Libraries do not print: progress goes to ``on_progress``.
"""

from local.measure.tune.config import (
                                       DEFAULT_OUT,
                                       DEFAULT_REQUESTS,
                                       DEFAULT_SIZES,
                                       METRICS,
                                       PERCENTILES,
                                       PRECISIONS,
                                       TuneConfig,
                                       TuneProgress,
)
from local.measure.tune.recommend import recommend
from local.measure.tune.results import Recommendation, SizeResult, TuneReport
from local.measure.tune.sweep import measure_emulated, resolve_models, run_tune

__all__ = ["DEFAULT_OUT", "DEFAULT_REQUESTS", "DEFAULT_SIZES", "METRICS", "PERCENTILES", "PRECISIONS", "Recommendation",
           "SizeResult", "TuneConfig", "TuneProgress", "TuneReport", "measure_emulated", "recommend", "resolve_models",
           "run_tune"]
