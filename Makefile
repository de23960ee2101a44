# The zip package of the function (template.yaml's ClassifierZipFunction, PackageType=Zip, with SnapStart).
# `sam build` runs the target below (BuildMethod: makefile) with ARTIFACTS_DIR set to the package's
# directory; build from the repository root so the repository is not copied to a scratch directory first:
#   sam build ClassifierZipFunction --build-in-source
#   sam deploy --guided --parameter-overrides PackageType=Zip ModelPrecision=int8
# or without SAM:  make build-ClassifierZipFunction ARTIFACTS_DIR=/tmp/package
# MODEL (default models/resnet50.int8.onnx: the fp32 ResNet-50 does not fit) picks another exported model.
# The package holds what the container image's /var/task holds (see the Dockerfile): the hash-locked
# runtime wheels for CPython 3.12 on Lambda's Linux, the torch-free core and one exported model with its
# sidecar and canary. pip downloads the wheels for Python 3.12 and Lambda's platform whatever Python runs
# it, so neither Docker nor a host Python 3.12 is needed (SAM's own python3.12 builder would need both
# for wheels with compiled parts). Nothing is byte-compiled: /var/task is read-only, so a zip function
# compiles its imports at init, and with SnapStart init runs once, when a version is published.
# tests/test_zip.py runs this target and the package it builds on the Lambda emulator.

PYTHON ?= python3
MODEL_PRECISION ?= int8
MODEL ?= models/resnet50$(if $(filter int8,$(MODEL_PRECISION)),.int8,).onnx
ARCHITECTURE ?= x86_64
# Lambda's limit on a function's unzipped size, its layers included: "250 MB", 262,144,000 bytes.
# https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
UNZIPPED_LIMIT_BYTES = 262144000

MACHINE = $(if $(filter arm64,$(ARCHITECTURE)),aarch64,x86_64)
STEM = $(basename $(MODEL))

.PHONY: build-ClassifierZipFunction

build-ClassifierZipFunction:
	@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is not set (sam build sets it)" >&2; exit 2; }
	@for f in "$(MODEL)" "$(STEM).json" "$(STEM).canary.json"; do \
	  test -f "$$f" || { echo "no $$f: export the model first (python -m export, see README)" >&2; exit 2; }; done
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-cache-dir --no-compile \
	  --require-hashes --no-deps --only-binary=:all: --implementation cp --python-version 3.12 \
	  --platform manylinux2014_$(MACHINE) --platform manylinux_2_28_$(MACHINE) --platform manylinux_2_34_$(MACHINE) \
	  --target "$(ARTIFACTS_DIR)" -r lambda_onnx/requirements.lock
	mkdir -p "$(ARTIFACTS_DIR)/lambda_onnx" "$(ARTIFACTS_DIR)/model"
	cp lambda_onnx/*.py "$(ARTIFACTS_DIR)/lambda_onnx/"
	cp "$(MODEL)" "$(ARTIFACTS_DIR)/model/model.onnx"
	cp "$(STEM).json" "$(ARTIFACTS_DIR)/model/model.json"
	cp "$(STEM).canary.json" "$(ARTIFACTS_DIR)/model/model.canary.json"
	@$(PYTHON) -c 'import os, sys; root, limit = sys.argv[1], int(sys.argv[2]); \
	  size = sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(root) for f in fs); \
	  print(f"package {size:,} bytes unzipped (Lambda limit {limit:,})"); \
	  sys.exit(0 if size <= limit else f"error: {size:,} bytes unzipped exceeds Lambda limit of {limit:,}: {sys.argv[3]} does not fit a zip package; use the container image (PackageType=Image)")' \
	  "$(ARTIFACTS_DIR)" $(UNZIPPED_LIMIT_BYTES) "$(MODEL)"
