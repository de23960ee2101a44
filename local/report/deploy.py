"""A :class:`~local.measure.scenario.deployment.FleetDeployment` as files to deploy with: the ECS stack's
parameters (``deploy/ecs/server.yaml``) and a Kustomize overlay of the Kubernetes base (``deploy/k8s/base``).

Neither stack nor manifest is ever edited by hand per deployment: the sizing becomes parameters and
patches, and the stack and base stay as they are linted and validated (``tests/test_deploy.py``).
:func:`render_k8s` applies an overlay as ``kubectl kustomize`` does for the few features it uses, so
the manifests can be shown, downloaded and validated where kustomize is not installed.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from local.measure.scenario.deployment import FleetDeployment

ROOT = Path(__file__).resolve().parents[2]
ECS_TEMPLATE = ROOT / "deploy" / "ecs" / "server.yaml"
K8S_BASE = ROOT / "deploy" / "k8s" / "base"
# Names in the base that the overlay patches.
K8S_NAME = "resnet-server"
K8S_IMAGE = "resnet-serverless-server"
# Memory an EC2 container instance keeps for itself and the ECS agent: a task asks for the rest.
# https://docs.aws.amazon.com/AmazonECS/latest/developerguide/memory-management.html
ECS_INSTANCE_RESERVED_MIB = 512
# Fargate's task sizes: vCPUs -> (least, most) memory in MiB, in steps of 1 GiB above 2 vCPUs' 4 GiB
# (1 vCPU: 2-8 GiB, 2: 4-16, 4: 8-30, 8: 16-60, 16: 32-120).
# https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html#fargate-tasks-size
FARGATE_MEMORY_MIB = {1: (2048, 8192), 2: (4096, 16384), 4: (8192, 30720), 8: (16384, 61440), 16: (32768, 122880)}
# The pod's preStop sleep (deploy/k8s/base/deployment.yaml) and what the grace period leaves beyond it and the drain.
PRESTOP_SLEEP_S = 5
GRACE_MARGIN_S = 10


def serve_args(dep: FleetDeployment) -> list[str]:
    """``local serve``'s options for one instance of ``dep`` (what follows the image's CMD)."""
    return ["--max-concurrency", str(dep.lanes), "--max-queue", str(dep.max_queue), "--drain-timeout", str(dep.drain_s)]


def task_memory_mib(dep: FleetDeployment) -> int:
    """Memory one task (or pod) asks for: an EC2 instance's less what it keeps, a Fargate task's as sized."""
    if dep.platform == "ec2":
        return dep.memory_mib - ECS_INSTANCE_RESERVED_MIB
    least, most = FARGATE_MEMORY_MIB.get(dep.vcpus, (0, 0))
    if not least:
        raise ValueError(f"Fargate has no task of {dep.vcpus} vCPUs (it offers {sorted(FARGATE_MEMORY_MIB)})")
    if not least <= dep.memory_mib <= most or dep.memory_mib % 1024:
        raise ValueError(f"Fargate's {dep.vcpus}-vCPU tasks take {least}-{most} MiB in whole GiB, not {dep.memory_mib}")
    return dep.memory_mib


def ecs_parameters(dep: FleetDeployment, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The stack's parameters for ``dep`` (names as in ``deploy/ecs/server.yaml``); ``extra`` adds the
    ones a sizing cannot know (VpcId, subnets, AllowedCidr, CertificateArn)."""
    params = {
        "LaunchType": "EC2" if dep.platform == "ec2" else "FARGATE",
        "Architecture": "ARM64" if dep.architecture == "arm64" else "X86_64",
        "TaskCpu": str(dep.vcpus * 1024),
        "TaskMemory": str(task_memory_mib(dep)),
        "Lanes": str(dep.lanes),
        "MaxQueue": str(dep.max_queue),
        "MinCapacity": str(dep.min_instances),
        "MaxCapacity": str(dep.max_instances),
        "TargetCpuPercent": f"{dep.target_cpu_pct:g}",
        "DrainSeconds": str(dep.drain_s),
        "HealthCheckGraceSeconds": str(math.ceil(dep.boot_s)),
    }
    if dep.platform == "ec2":
        params["InstanceType"] = dep.instance_type
        if dep.architecture == "arm64":
            params["Ec2ImageId"] = "/aws/service/ecs/optimized-ami/amazon-linux-2023/arm64/recommended/image_id"
    if dep.image:
        params["ImageUri"] = dep.image
    return {**params, **(extra or {})}


def write_ecs_parameters(dep: FleetDeployment, path: Path, extra: Mapping[str, str] | None = None) -> Path:
    """The stack's parameters as a JSON list of ``Key=Value``, the form ``aws cloudformation deploy
    --parameter-overrides`` reads from a file in AWS CLI v1 and v2 alike (README, "Deploy the server side")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([f"{key}={value}" for key, value in ecs_parameters(dep, extra).items()], indent=2) + "\n")
    return path


def k8s_kustomization(dep: FleetDeployment, base: str = "base") -> dict[str, Any]:
    """The overlay for ``dep``: replicas, the container's resources and options, the grace period, the HPA."""
    container = "/spec/template/spec/containers/0"
    cpu, memory = str(dep.vcpus), f"{task_memory_mib(dep)}Mi"
    deployment_ops = [
        {"op": "replace", "path": f"{container}/resources",
         "value": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}}},
        {"op": "replace", "path": f"{container}/args", "value": [*_base_args(), *serve_args(dep)]},
        {"op": "replace", "path": "/spec/template/spec/terminationGracePeriodSeconds",
         "value": dep.drain_s + PRESTOP_SLEEP_S + GRACE_MARGIN_S},
    ]
    hpa_ops = [
        {"op": "replace", "path": "/spec/minReplicas", "value": dep.min_instances},
        {"op": "replace", "path": "/spec/maxReplicas", "value": dep.max_instances},
        {"op": "replace", "path": "/spec/metrics/0/resource/target/averageUtilization", "value": round(dep.target_cpu_pct)},
    ]
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [base],
        "replicas": [{"name": K8S_NAME, "count": dep.min_instances}],
        "patches": [
            {"target": {"kind": "Deployment", "name": K8S_NAME}, "patch": yaml.safe_dump(deployment_ops, sort_keys=False)},
            {"target": {"kind": "HorizontalPodAutoscaler", "name": K8S_NAME}, "patch": yaml.safe_dump(hpa_ops, sort_keys=False)},
        ],
    }
    if dep.image:
        name, digest = dep.image.split("@", 1)
        kustomization["images"] = [{"name": K8S_IMAGE, "newName": name, "digest": digest}]
    return kustomization


def _base_args() -> list[str]:
    """The base Deployment's options up to the sizing's (host, port, model, runtime): kept as they are."""
    deployment = _load_yaml(K8S_BASE / "deployment.yaml")[0]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args[:args.index("--max-concurrency")]


def write_k8s_overlay(dep: FleetDeployment, directory: Path) -> Path:
    """A self-contained overlay in ``directory``: the base copied into ``base/`` and a kustomization.yaml
    patching it for ``dep``; ``kubectl apply -k DIRECTORY`` deploys it."""
    directory = Path(directory)
    shutil.copytree(K8S_BASE, directory / "base", dirs_exist_ok=True)
    header = (f"# The server side sized by python -m local scenario: {dep.min_instances}-{dep.max_instances} pods of "
              f"{dep.vcpus} CPU / {task_memory_mib(dep)} MiB ({dep.lanes} lanes, model {dep.model}), scaled at "
              f"{dep.target_cpu_pct:g} % CPU.\n# Deploy: kubectl apply -k {directory}\n")
    path = directory / "kustomization.yaml"
    path.write_text(header + yaml.dump(k8s_kustomization(dep), Dumper=_BlockDumper, sort_keys=False))
    return path


class _BlockDumper(yaml.SafeDumper):
    """YAML with multi-line strings (the patches) as literal blocks, readable as the base is."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_BlockDumper.add_representer(str, _string)


# --- rendering an overlay, as kustomize would for what these overlays use ---------------------------------


def _load_yaml(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(Path(path).read_text()) if doc]


def render_k8s(directory: Path) -> list[dict[str, Any]]:
    """The manifests a kustomization directory stands for: its resources (files, or directories rendered
    in turn), then its ``replicas``, ``images`` and JSON 6902 ``patches``. Anything else it holds raises
    ValueError rather than being silently ignored (``kubectl kustomize`` renders every feature)."""
    directory = Path(directory)
    kustomization = _load_yaml(directory / "kustomization.yaml")[0]
    unknown = set(kustomization) - {"apiVersion", "kind", "resources", "replicas", "images", "patches"}
    if unknown:
        raise ValueError(f"{directory}/kustomization.yaml: {sorted(unknown)} are not rendered here; use kubectl kustomize")
    resources: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        source = directory / entry
        resources += render_k8s(source) if source.is_dir() else _load_yaml(source)
    for replica in kustomization.get("replicas", []):
        for resource in _matching(resources, None, replica["name"]):
            if resource["kind"] in _SCALED_KINDS:
                resource["spec"]["replicas"] = replica["count"]
    for image in kustomization.get("images", []):
        for resource in resources:
            for container in resource.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                if container["image"].split("@")[0].split(":")[0] == image["name"]:
                    container["image"] = image.get("newName", image["name"]) + (
                        f"@{image['digest']}" if "digest" in image else f":{image['newTag']}" if "newTag" in image else "")
    for patch in kustomization.get("patches", []):
        target = patch["target"]
        for resource in _matching(resources, target.get("kind"), target.get("name")):
            for op in yaml.safe_load(patch["patch"]):
                _apply(resource, op)
    return resources


_SCALED_KINDS = ("Deployment", "ReplicaSet", "StatefulSet", "ReplicationController")  # what kustomize's replicas sets


def _matching(resources: list[dict[str, Any]], kind: str | None, name: str | None) -> list[dict[str, Any]]:
    return [r for r in resources if (kind is None or r["kind"] == kind) and (name is None or r["metadata"]["name"] == name)]


def _apply(document: dict[str, Any], op: Mapping[str, Any]) -> None:
    """One JSON patch operation (RFC 6902): ``add``, ``replace`` or ``remove``."""
    *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in op["path"].lstrip("/").split("/")]
    node: Any = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) and last != "-" else last
    if op["op"] == "remove":
        del node[key]
    elif op["op"] == "replace":  # only what is there (RFC 6902): a wrong path is an error, not an addition
        if isinstance(node, dict) and key not in node or isinstance(node, list) and not 0 <= key < len(node):
            raise KeyError(f"JSON patch: nothing to replace at {op['path']}")
        node[key] = copy.deepcopy(op["value"])
    elif op["op"] == "add":
        if isinstance(node, list):
            node.insert(len(node) if last == "-" else key, copy.deepcopy(op["value"]))
        else:
            node[key] = copy.deepcopy(op["value"])
    else:
        raise ValueError(f"JSON patch operation {op['op']!r} is not rendered here")


def write_k8s_manifests(dep: FleetDeployment, path: Path) -> Path:
    """The overlay for ``dep`` rendered into one YAML file (``kubectl apply -f``), for a download."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_k8s_overlay(dep, Path(tmp))
        documents = render_k8s(Path(tmp))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path
