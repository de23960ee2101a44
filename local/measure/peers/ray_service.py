"""The Ray Serve peer of ``local serve`` for ``python -m local loadtest --peers``: the same model, the
same preprocessing and the same answer (this repository's ``lambda_onnx``), as little Ray Serve code as
its documentation shows, run in its own virtualenv (``local/measure/peers/setup.sh``).

``python -m local.measure.peers.ray_service --port P`` from the repository root, with ``PEER_MODEL``
(the ``.onnx``), ``PEER_WORKERS`` (replicas, one CPU each) and ``PEER_THREADS`` (ONNX Runtime threads
per replica) in the environment. It starts a local Ray instance with this machine's CPUs, serves
``POST /classify`` (the raw image as the body; the contract's JSON body back) until SIGTERM or
SIGINT, then shuts Ray down with every process it started.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from typing import Any

import ray
from ray import serve
from starlette.requests import Request

from lambda_onnx.classifier import Classifier
from lambda_onnx.contract import Service
from lambda_onnx.resources import available_cpus

WORKERS = int(os.environ.get("PEER_WORKERS", "1"))


@serve.deployment(num_replicas=WORKERS, ray_actor_options={"num_cpus": 1})
class Classify:
    def __init__(self) -> None:
        self.service = Service(Classifier(os.environ["PEER_MODEL"], threads=int(os.environ.get("PEER_THREADS", "1"))))

    async def __call__(self, request: Request) -> dict[str, Any]:
        _, body = self.service.respond(body=await request.body(), content_type=request.headers.get("content-type"))
        return dict(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    ray.init(num_cpus=max(WORKERS, round(available_cpus())), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {k: v for k, v in os.environ.items() if k.startswith("PEER_")}})
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs handlers of its own
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(Classify.bind(),  # type: ignore[attr-defined]  # added by @serve.deployment
                  route_prefix="/classify", blocking=False)
        print(f"ray serve ready on http://{args.host}:{args.port}/classify", flush=True)
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
