"""The peers of ``local serve`` in ``python -m local loadtest --peers``: BentoML and Ray Serve serving the
same model with the same preprocessing and the same answer body (they import this repository's
``lambda_onnx``), each from a virtualenv of its own that ``bash local/measure/peers/setup.sh`` makes
(``.venv/peers/<name>``), never from the project's requirements.

- ``bentoml_service.py``: a BentoML service; ``PEER_WORKERS`` processes (BentoML's ``workers``), one
  request at a time each;
- ``ray_service.py``: a Ray Serve deployment; ``PEER_WORKERS`` replicas of one CPU each.

Both get the split ``local serve`` gets from the core's rule (a process or replica per lane, ONNX
Runtime threads per lane), so the three differ in how they serve, not in how the CPUs are shared.
:mod:`local.measure.peers.process` starts one on a loopback port and stops it with every process it
started. This ``__init__`` imports nothing: the services run in the peers' virtualenvs, which hold
only the framework and the core's requirements.
"""
