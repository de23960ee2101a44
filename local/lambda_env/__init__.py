"""The emulated Lambda: execution environments run by the AWS Lambda Runtime Interface Emulator.

- :mod:`local.lambda_env.rie`: one environment (``Emulator``: the RIE and the runtime client running
  the handler), and what one invoke returns (``Invocation``);
- :mod:`local.lambda_env.pool`: a fixed pool of environments (``EmulatorPool``);
- :mod:`local.lambda_env.elastic`: environments started on demand, reused and reclaimed as Lambda
  does, throttled past a concurrency limit (``ElasticPool``);
- :mod:`local.lambda_env.front`: one Invoke API URL in front of a pool, answering as Lambda's Invoke
  API does (``InvokeFront``);
- :mod:`local.lambda_env.async_queue`: Lambda's asynchronous invocation queue, bounded (``AsyncQueue``);
- :mod:`local.lambda_env.cgroups`: CPU and memory confined the way Lambda sizes a function.
"""

from local.lambda_env.elastic import DEFAULT_MAX_CONCURRENCY, ElasticPool
from local.lambda_env.front import InvokeFront
from local.lambda_env.pool import EmulatorPool
from local.lambda_env.rie import Emulator, Invocation

__all__ = ["DEFAULT_MAX_CONCURRENCY", "ElasticPool", "Emulator", "EmulatorPool", "Invocation", "InvokeFront"]
