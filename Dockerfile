# The Lambda function: the torch-free core (lambda_onnx/), its pinned runtime requirements and one
# exported model with its sidecar. Build from the repository root:
#   docker build -t resnet-serverless .
#   docker build -t resnet-serverless --build-arg MODEL=models/resnet50.int8.onnx --build-arg SIDECAR=models/resnet50.int8.json .
# (`sam build` passes the same two arguments from template.yaml.) tests/test_image.py assembles the
# task root exactly as the COPY and pip lines below say and runs it under Python 3.12 and the
# Lambda emulator, so a file missing here fails the tests.
FROM public.ecr.aws/lambda/python:3.12

# Dependencies first: their layer is rebuilt only when the pins change. --no-cache-dir leaves no
# pip cache in the image; wheels only, so no compiler is ever needed.
COPY lambda_onnx/requirements.txt ${LAMBDA_TASK_ROOT}/lambda_onnx/requirements.txt
RUN pip install --no-cache-dir --only-binary=:all: --target "${LAMBDA_TASK_ROOT}" -r "${LAMBDA_TASK_ROOT}/lambda_onnx/requirements.txt"

# The model and its sidecar (the handler reads model/model.onnx and the JSON next to it). Two
# arguments because a Dockerfile cannot derive one path from the other; the sidecar's size and
# sha256 are checked against the model at start-up, so a mismatched pair fails loudly.
ARG MODEL=models/resnet50.onnx
ARG SIDECAR=models/resnet50.json
COPY ${MODEL} ${LAMBDA_TASK_ROOT}/model/model.onnx
COPY ${SIDECAR} ${LAMBDA_TASK_ROOT}/model/model.json

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
