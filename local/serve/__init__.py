"""``python -m local serve``: the server approach over HTTP, with the Lambda function's contract.

- :mod:`local.serve.app`: the ASGI app, the HTTP front (``create_app``), and ``run``;
- :mod:`local.serve.lanes`: the lane processes that classify, fed first in, first out from one queue;
- :mod:`local.serve.config`: ``ServeConfig``, every default once, passed as an argument (never through the environment);
- :mod:`local.serve.gate`: admission control (503 past capacity);
- :mod:`local.serve.refusal`: pacing, counting and summarising the 503s;
- :mod:`local.serve.drain`: the graceful drain on SIGTERM (new connections refused, accepted requests answered);
- :mod:`local.serve.workers`: ``--workers N``, fronts on sockets of their own (``SO_REUSEPORT``);
- :mod:`local.serve.protocol`: uvicorn's HTTP protocols with a request-head deadline, and ``uvicorn_options``;
- :mod:`local.serve.auto`: ``--runtime auto``, the benchmark's choice on this machine;
- :mod:`local.serve.process`: a ``local serve`` child process (soaks, load tests, replays, tests).
"""

from local.serve.app import create_app, run
from local.serve.auto import resolve_auto
from local.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app", "resolve_auto", "run"]
