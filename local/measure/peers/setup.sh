#!/usr/bin/env bash
# The peers of `python -m local loadtest --peers`: BentoML and Ray Serve, each in a virtualenv of its
# own (.venv/peers/bentoml, .venv/peers/ray), never in the project's requirements. Each also gets the
# core's own runtime requirements (lambda_onnx/requirements.txt: the same ONNX Runtime, NumPy and
# Pillow), because the peer services import this repository's lambda_onnx for the same
# preprocessing and the same session. Idempotent; prints how long each install took.
set -euo pipefail
cd "$(dirname "$0")/../../.."

PYTHON=${PYTHON:-python3.11}
BENTOML_VERSION=1.4.40
RAY_VERSION=2.60.0

install_peer() {  # name, pip requirement
  local name=$1 requirement=$2 venv=.venv/peers/$1
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import $name" 2>/dev/null; then
    echo "$name: already installed in $venv"
    return
  fi
  local start=$SECONDS
  "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r lambda_onnx/requirements.txt "$requirement"
  echo "$name: installed $requirement in $venv in $((SECONDS - start)) s"
}

mkdir -p .venv/peers
install_peer bentoml "bentoml==$BENTOML_VERSION"
install_peer ray "ray[serve]==$RAY_VERSION"
