# The Lambda function: the torch-free core (lambda_onnx/), its pinned runtime requirements and one
# exported model with its sidecar. Build from the repository root:
#   docker build -t resnet-serverless .
#   docker build -t resnet-serverless --build-arg MODEL=models/resnet50.int8.onnx --build-arg SIDECAR=models/resnet50.int8.json \
#       --build-arg CANARY=models/resnet50.int8.canary.json .
# (`sam build` passes the same three arguments from template.yaml.) tests/test_image.py assembles the
# task root exactly as the COPY and pip lines below say and runs it under Python 3.12 and the
# Lambda emulator, so a file missing here fails the tests.
# The base image pinned by digest (the multi-architecture index, so x86_64 and arm64 builds both resolve it):
# a tag moves, a digest does not, so two builds start from the same bytes. To refresh it (monthly, for AWS's
# security patches), read the tag's current index digest and paste it here, then rebuild and run the tests:
#   docker buildx imagetools inspect public.ecr.aws/lambda/python:3.12 --format '{{json .Manifest.Digest}}'
#   (or: crane digest public.ecr.aws/lambda/python:3.12)
FROM public.ecr.aws/lambda/python:3.12@sha256:0628ddc11919f85f4261517d356392dbbc6b3181568d87a376ae2e814464c230

# Dependencies first: their layer is rebuilt only when the lock changes. The lock pins every
# package, transitive ones too, with the sha256 of each file (uv pip compile from
# lambda_onnx/requirements.txt; the command is at its top): --require-hashes makes pip refuse
# anything else, --no-deps stops it resolving on its own, so two builds install the same bytes.
# Wheels only, so no compiler is ever needed; --no-cache-dir leaves no pip cache in the image.
# `pip` and ${LAMBDA_TASK_ROOT} as in AWS's own example for this base image:
# https://docs.aws.amazon.com/lambda/latest/dg/python-image.html
COPY lambda_onnx/requirements.lock ${LAMBDA_TASK_ROOT}/lambda_onnx/requirements.lock
RUN pip install --no-cache-dir --require-hashes --no-deps --only-binary=:all: --target "${LAMBDA_TASK_ROOT}" -r "${LAMBDA_TASK_ROOT}/lambda_onnx/requirements.lock"

# The model and its sidecar (the handler reads model/model.onnx and the JSON next to it). Two
# arguments because a Dockerfile cannot derive one path from the other; the sidecar's size and
# sha256 are checked against the model at start-up, so a mismatched pair fails loudly.
ARG MODEL=models/resnet50.onnx
ARG SIDECAR=models/resnet50.json
COPY ${MODEL} ${LAMBDA_TASK_ROOT}/model/model.onnx
COPY ${SIDECAR} ${LAMBDA_TASK_ROOT}/model/model.json
# The model's canary (a real photo and PyTorch's logits for it, written by the export): the handler
# classifies it once per cold start on the CPU it landed on and refuses to serve if the answer is
# off (see lambda_onnx/canary.py). `python -m lambda_onnx.verify` below checks it belongs to MODEL.
ARG CANARY=models/resnet50.canary.json
COPY ${CANARY} ${LAMBDA_TASK_ROOT}/model/model.canary.json

COPY lambda_onnx/ ${LAMBDA_TASK_ROOT}/lambda_onnx/
# /var/task is read-only on Lambda, so Python cannot cache bytecode there at run time: compile it
# now (pip already did for the dependencies) or every cold start compiles the handler again.
RUN python -m compileall -q "${LAMBDA_TASK_ROOT}/lambda_onnx"

# Check the model against its sidecar (size and sha256) once, here: a wrong pair fails the build.
# The image cannot change afterwards, so the cold start only checks the size (hashing 100 MB would
# cost ~150 ms of every cold start).
WORKDIR ${LAMBDA_TASK_ROOT}
RUN python -m lambda_onnx.verify "${LAMBDA_TASK_ROOT}/model/model.onnx"
ENV MODEL_VERIFY=size

CMD ["lambda_onnx.handler.handler"]
