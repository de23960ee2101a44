"""The server side's deploy files, offline: the ECS stack passes cfn-lint and checkov (every skip with its
reason) and says what the issue asks, consistently with the server image and the drain; the Kubernetes
base and every overlay the writers produce validate against the Kubernetes schemas; the parameters a
sizing becomes are accepted by cfn-lint with the stack."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from cfnlint.decode import decode

from local.measure.scenario.deployment import FleetDeployment
from local.report.deploy import (
    ECS_TEMPLATE,
    K8S_BASE,
    PRESTOP_SLEEP_S,
    ecs_parameters,
    render_k8s,
    serve_args,
    task_memory_mib,
    write_ecs_parameters,
    write_k8s_manifests,
    write_k8s_overlay,
)
from local.serve.config import DRAIN_TIMEOUT_S
from tests.helpers.process import ROOT
from tests.helpers.taskroot import parse_dockerfile

CFN_LINT = Path(sys.executable).parent / "cfn-lint"
# checkov pins old boto3 and packaging, so .ci/install gives it a virtualenv of its own.
CHECKOV = ROOT / ".venv" / "checkov" / "bin" / "checkov"
DIGEST = "sha256:" + "ab" * 32
IMAGE = f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/resnet-serverless-server@{DIGEST}"
CMD = parse_dockerfile(ROOT / "deploy" / "server" / "Dockerfile").cmd
K8S_VERSION = "1.33.0"  # a release current clusters run (EKS, GKE); the schemas ship with kubernetes-validate

SIZINGS = {
    "fargate": FleetDeployment("fargate", "fargate", 2, 4096, 2, 1, 6, 60.0, 30, 60.0, 16, "efficientnet_lite0.onnx"),
    "c7i": FleetDeployment("ec2", "c7i.large", 2, 4096, 2, 3, 7, 55.0, 30, 120.0, 16, "resnet50.int8.onnx", image=IMAGE),
    "graviton": FleetDeployment("ec2", "c7g.xlarge", 4, 8192, 4, 2, 10, 70.0, 20, 90.5, 8, "resnet50.onnx",
                                architecture="arm64", image=IMAGE),
}
# What a sizing cannot know; the deploy command gives them.
NETWORK = {"VpcId": "vpc-0123456789abcdef0", "LoadBalancerSubnetIds": "subnet-0123456789abcdef0,subnet-0fedcba9876543210",
           "ServiceSubnetIds": "subnet-0123456789abcdef0", "AllowedCidr": "203.0.113.0/24", "ImageUri": IMAGE}


@pytest.fixture(scope="module")
def stack() -> dict:
    data, problems = decode(str(ECS_TEMPLATE))
    assert not problems, problems
    return data


def lint(path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CFN_LINT), str(path), *args], capture_output=True, text=True, timeout=120)


# --- the ECS stack ------------------------------------------------------------------------------------------


def test_cfn_lint_passes():
    out = lint(ECS_TEMPLATE)
    assert out.returncode == 0, out.stdout + out.stderr


def checkov(path: Path) -> dict:
    if not CHECKOV.is_file():
        pytest.fail(f"{CHECKOV} is missing: bash .ci/install installs checkov in a virtualenv of its own")
    out = subprocess.run([str(CHECKOV), "-f", str(path), "--framework", "cloudformation", "--skip-download", "-o", "json"],
                         capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout)["results"]


@pytest.mark.slow
def test_checkov_finds_nothing_and_every_skip_says_why(tmp_path):
    results = checkov(ECS_TEMPLATE)
    assert results["failed_checks"] == [], [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
    assert results["passed_checks"]
    for skipped in results["skipped_checks"]:
        assert len(skipped["check_result"].get("suppress_comment", "")) > 40, skipped["check_id"]  # a reason, not a shrug
    # ... and it would catch a weakened copy: the load balancer passing malformed headers on.
    weakened = tmp_path / "server.yaml"
    weakened.write_text(ECS_TEMPLATE.read_text().replace('drop_invalid_header_fields.enabled\n          Value: "true"',
                                                         'drop_invalid_header_fields.enabled\n          Value: "false"'))
    assert "CKV_AWS_131" in {c["check_id"] for c in checkov(weakened)["failed_checks"]}


def resources_of(stack: dict, kind: str) -> dict[str, dict]:
    return {name: r for name, r in stack["Resources"].items() if r["Type"] == kind}


def test_the_alb_routes_to_the_least_outstanding_requests_checks_health_and_waits_for_the_drain(stack):
    (group,) = resources_of(stack, "AWS::ElasticLoadBalancingV2::TargetGroup").values()
    props = group["Properties"]
    attributes = {a["Key"]: a["Value"] for a in props["TargetGroupAttributes"]}
    assert attributes["load_balancing.algorithm.type"] == "least_outstanding_requests"
    assert attributes["deregistration_delay.timeout_seconds"] == {"Ref": "DrainSeconds"}
    assert props["HealthCheckPath"] == "/health" and props["Port"] == 8000 and props["TargetType"] == "ip"
    drain = stack["Parameters"]["DrainSeconds"]
    assert drain["Default"] == DRAIN_TIMEOUT_S
    (task,) = resources_of(stack, "AWS::ECS::TaskDefinition").values()
    (container,) = task["Properties"]["ContainerDefinitions"]
    assert container["StopTimeout"] >= drain["MaxValue"]  # SIGKILL never comes before the drain's deadline
    # The image's own command, then the sizing's lanes, queue and drain deadline.
    assert container["Command"] == [*CMD, "--max-concurrency", {"Ref": "Lanes"}, "--max-queue", {"Ref": "MaxQueue"},
                                    "--drain-timeout", {"Ref": "DrainSeconds"}]
    assert container["ReadonlyRootFilesystem"] is True and container["PortMappings"] == [{"ContainerPort": 8000, "Protocol": "tcp"}]
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    (logs,) = resources_of(stack, "AWS::Logs::LogGroup").values()
    assert logs["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_autoscaling_tracks_average_cpu_between_min_and_max(stack):
    (target,) = resources_of(stack, "AWS::ApplicationAutoScaling::ScalableTarget").values()
    assert target["Properties"]["MinCapacity"] == {"Ref": "MinCapacity"}
    assert target["Properties"]["MaxCapacity"] == {"Ref": "MaxCapacity"}
    (policy,) = resources_of(stack, "AWS::ApplicationAutoScaling::ScalingPolicy").values()
    config = policy["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    assert config["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ECSServiceAverageCPUUtilization"
    assert config["TargetValue"] == {"Ref": "TargetCpuPercent"}


def test_fargate_by_default_ec2_capacity_provider_on_request(stack):
    assert stack["Parameters"]["LaunchType"]["Default"] == "FARGATE"
    for kind in ("AWS::AutoScaling::AutoScalingGroup", "AWS::ECS::CapacityProvider", "AWS::EC2::LaunchTemplate"):
        (resource,) = resources_of(stack, kind).values()
        assert resource["Condition"] == "OnEc2", kind
    (service,) = resources_of(stack, "AWS::ECS::Service").values()
    assert service["Properties"]["CapacityProviderStrategy"] == [
        {"CapacityProvider": {"Fn::If": ["OnEc2", {"Ref": "CapacityProvider"}, "FARGATE"]}, "Weight": 1}]
    assert "ClusterCapacityProviders" in service["DependsOn"]  # the strategy's provider is the cluster's first
    (template,) = resources_of(stack, "AWS::EC2::LaunchTemplate").values()
    assert template["Properties"]["LaunchTemplateData"]["MetadataOptions"]["HttpTokens"] == "required"


def test_only_the_allowed_cidr_reaches_the_alb_and_only_the_alb_reaches_the_tasks(stack):
    assert "Default" not in stack["Parameters"]["AllowedCidr"]  # the operator must say who may call
    groups = stack["Resources"]
    (ingress,) = groups["LoadBalancerSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert ingress["CidrIp"] == {"Ref": "AllowedCidr"}
    (tasks,) = groups["ServiceSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert tasks["SourceSecurityGroupId"] == {"Ref": "LoadBalancerSecurityGroup"} and tasks["FromPort"] == 8000
    listener = groups["Listener"]["Properties"]
    assert listener["Protocol"] == {"Fn::If": ["WithHttps", "HTTPS", "HTTP"]}


def cfn_lint_parameters(path: Path, pairs: list[str], tmp: Path) -> Path:
    """The deploy command's parameters as cfn-lint's parameter file (list-typed ones as lists)."""
    types = {name: p["Type"] for name, p in decode(str(ECS_TEMPLATE))[0]["Parameters"].items()}
    entries = []
    for pair in pairs:
        key, value = pair.split("=", 1)
        if types[key].startswith("AWS::SSM::Parameter::Value<"):  # CloudFormation resolves the name, cfn-lint does not
            assert value.startswith("/aws/service/"), value
            value = "ami-0123456789abcdef0"
        entries.append({"ParameterKey": key, "ParameterValue": value.split(",") if types[key].startswith("List<") else value})
    out = tmp / "cfn-lint-parameters.json"
    out.write_text(json.dumps(entries))
    return out


@pytest.mark.parametrize("name", list(SIZINGS))
def test_a_sizing_becomes_parameters_cfn_lint_accepts_with_the_stack(name, tmp_path, stack):
    dep = SIZINGS[name]
    written = write_ecs_parameters(dep, tmp_path / "parameters.json")
    pairs = json.loads(written.read_text())
    assert all(isinstance(p, str) and "=" in p for p in pairs)  # what `deploy --parameter-overrides file://` reads
    given = dict(pair.split("=", 1) for pair in pairs)
    assert set(given) <= set(stack["Parameters"])
    assert given["DrainSeconds"] == str(dep.drain_s) and given["Lanes"] == str(dep.lanes)
    assert given["MinCapacity"] == str(dep.min_instances) and given["MaxCapacity"] == str(dep.max_instances)
    assert given["LaunchType"] == ("EC2" if dep.platform == "ec2" else "FARGATE")
    pairs += [f"{k}={v}" for k, v in NETWORK.items() if k not in given]
    out = lint(ECS_TEMPLATE, "--parameter-files", str(cfn_lint_parameters(written, pairs, tmp_path)))
    assert out.returncode == 0, out.stdout + out.stderr


def test_cfn_lint_with_parameters_would_catch_a_bad_one(tmp_path):
    pairs = [f"{k}={v}" for k, v in {**ecs_parameters(SIZINGS["fargate"], NETWORK), "TaskCpu": "3000"}.items()]
    out = lint(ECS_TEMPLATE, "--parameter-files", str(cfn_lint_parameters(tmp_path, pairs, tmp_path)))
    assert out.returncode != 0 and "3000" in out.stdout


def test_fargate_sizes_are_fargates_and_ec2_tasks_leave_the_agent_room():
    assert task_memory_mib(SIZINGS["c7i"]) < SIZINGS["c7i"].memory_mib
    with pytest.raises(ValueError, match="Fargate"):
        task_memory_mib(FleetDeployment("fargate", "fargate", 2, 3000, 2, 1, 2, 60.0))
    with pytest.raises(ValueError, match="Fargate"):
        task_memory_mib(FleetDeployment("fargate", "fargate", 3, 8192, 3, 1, 2, 60.0))


# --- Kubernetes ---------------------------------------------------------------------------------------------


def validate(documents: list[dict]) -> None:
    for document in documents:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)  # raises on anything off-schema


def by_kind(documents: list[dict]) -> dict[str, dict]:
    return {d["kind"]: d for d in documents}


def test_the_base_validates_and_holds_what_a_drain_needs():
    documents = render_k8s(K8S_BASE)
    validate(documents)
    kinds = by_kind(documents)
    assert set(kinds) == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] + container["args"][:len(CMD) - len(container["command"])] == CMD
    assert container["resources"]["requests"] == container["resources"]["limits"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/health", probe
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRESTOP_SLEEP_S)]
    drain = int(container["args"][container["args"].index("--drain-timeout") + 1])
    assert drain == DRAIN_TIMEOUT_S and pod["terminationGracePeriodSeconds"] > PRESTOP_SLEEP_S + drain
    user = parse_dockerfile(ROOT / "deploy" / "server" / "Dockerfile").meta["USER"].split(":")[0]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == int(user)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    hpa = kinds["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_validation_would_catch_a_broken_manifest():
    deployment = by_kind(render_k8s(K8S_BASE))["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limit"] = {"cpu": "2"}  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        validate([deployment])


@pytest.mark.parametrize("name", list(SIZINGS))
def test_a_sizing_becomes_an_overlay_that_validates(name, tmp_path):
    dep = SIZINGS[name]
    write_k8s_overlay(dep, tmp_path / "k8s")
    documents = render_k8s(tmp_path / "k8s")
    validate(documents)
    kinds = by_kind(documents)
    deployment, hpa = kinds["Deployment"], kinds["HorizontalPodAutoscaler"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] == dep.min_instances
    limits = container["resources"]["limits"]
    assert limits == container["resources"]["requests"] == {"cpu": str(dep.vcpus), "memory": f"{task_memory_mib(dep)}Mi"}
    assert container["command"] + container["args"] == [*CMD, *serve_args(dep)]
    assert pod["terminationGracePeriodSeconds"] > dep.drain_s + PRESTOP_SLEEP_S
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (dep.min_instances, dep.max_instances)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == round(dep.target_cpu_pct)
    assert container["image"] == (IMAGE if dep.image else "resnet-serverless-server")
    # One file for `kubectl apply -f`, the same documents.
    single = write_k8s_manifests(dep, tmp_path / "manifests.yaml")
    assert list(yaml.safe_load_all(single.read_text())) == documents


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed: render_k8s alone renders")
@pytest.mark.parametrize("name", list(SIZINGS))
def test_the_overlay_renders_as_kubectl_kustomize_renders_it(name, tmp_path):
    write_k8s_overlay(SIZINGS[name], tmp_path / "k8s")
    out = subprocess.run(["kubectl", "kustomize", str(tmp_path / "k8s")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr

    def key(document: dict) -> tuple[str, str]:
        return document["kind"], document["metadata"]["name"]

    assert sorted(yaml.safe_load_all(out.stdout), key=key) == sorted(render_k8s(tmp_path / "k8s"), key=key)


# --- the record ---------------------------------------------------------------------------------------------


def test_the_record_round_trips_through_json_and_refuses_nonsense():
    for dep in SIZINGS.values():
        assert FleetDeployment(**json.loads(json.dumps(dep.to_dict()))) == dep
    bad = {"platform": "lambda"}, {"min_instances": 9}, {"image": "repo:latest"}, {"target_cpu_pct": 120.0}
    for change in bad:
        with pytest.raises(ValueError):
            FleetDeployment(**{**SIZINGS["c7i"].to_dict(), **change})
