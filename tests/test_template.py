"""The SAM template, offline: cfn-lint passes (and would catch a mistake), and it says what the
issue asks for, consistently with the Dockerfile, the sidecar naming and the handler's metrics."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cfnlint.decode import decode

from lambda_onnx.canary import ALLOW_CANARY_FAILURE_ENV, canary_path
from lambda_onnx.cpu import INT8_KERNEL_CHOICES, INT8_KERNEL_ENV
from lambda_onnx.sidecar import sidecar_path
from tests.helpers.process import ROOT
from tests.helpers.taskroot import parse_dockerfile

TEMPLATE = ROOT / "template.yaml"
# The function the stack runs: the zip package's or the container image's (PackageType).
FUNCTION_NAME = {"Fn::If": ["IsZip", {"Ref": "ClassifierZipFunction"}, {"Ref": "ClassifierFunction"}]}
CFN_LINT = Path(sys.executable).parent / "cfn-lint"


@pytest.fixture(scope="module")
def template() -> dict:
    data, problems = decode(str(TEMPLATE))
    assert not problems, problems
    return data


def resources_of(template: dict, kind: str) -> dict[str, dict]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CFN_LINT), str(path)], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cfn_lint_passes():
    out = lint(TEMPLATE)
    assert out.returncode == 0, out.stdout + out.stderr


CHECKOV = ROOT / ".venv" / "checkov" / "bin" / "checkov"  # a venv of its own (.ci/install): it pins old boto3


@pytest.mark.slow
@pytest.mark.skipif(not CHECKOV.exists(), reason="checkov is not installed (bash .ci/install puts it in .venv/checkov)")
def test_checkov_finds_nothing_left_unexplained():
    """The infrastructure-as-code scan passes; every check it skips says why in the template (Metadata.checkov)."""
    out = subprocess.run([str(CHECKOV), "-f", str(TEMPLATE), "--framework", "cloudformation", "--compact",
                          "--skip-download", "--output", "json"], capture_output=True, text=True, timeout=600)
    report = json.loads(out.stdout)
    assert report["summary"]["failed"] == 0, [c["check_id"] for c in report["results"]["failed_checks"]]
    skipped = report["results"]["skipped_checks"]
    assert skipped and all(len(c["check_result"].get("suppress_comment", "")) > 40 for c in skipped)


@pytest.mark.slow
def test_cfn_lint_catches_a_broken_copy(tmp_path):
    broken = tmp_path / "template.yaml"
    text = TEMPLATE.read_text().replace("      Tracing: Active\n", "      Tracing: Active\n      MemorySizee: 1024\n")
    broken.write_text(text.replace("RouteKey: POST /classify", "RouteKey: 17\n      Bogus: true"))
    out = lint(broken)
    assert out.returncode != 0 and "MemorySizee" in out.stdout and "Bogus" in out.stdout


def test_parameters(template):
    params = template["Parameters"]
    assert (params["Architecture"]["Default"], params["Architecture"]["AllowedValues"]) == ("x86_64", ["x86_64", "arm64"])
    assert params["MemorySize"]["Default"] == 3008 and params["Timeout"]["Type"] == "Number"
    assert params["ModelPrecision"]["AllowedValues"] == ["fp32", "int8"]
    assert params["ReservedConcurrency"]["Default"] == -1  # -1 = unset
    assert params["CorsOrigins"]["Default"] == "" and params["CorsOrigins"]["Type"] == "CommaDelimitedList"
    assert params["FunctionUrlAuthType"]["Default"] == "AWS_IAM"
    assert (params["Int8Kernel"]["Default"], params["Int8Kernel"]["AllowedValues"]) == ("auto", list(INT8_KERNEL_CHOICES))
    assert (params["AllowCanaryFailure"]["Default"], params["AllowCanaryFailure"]["AllowedValues"]) == ("0", ["0", "1"])
    assert set(params["FunctionUrlAuthType"]["AllowedValues"]) == {"AWS_IAM", "NONE", "DISABLED"}


def test_function_is_an_image_built_from_the_dockerfile_with_the_chosen_model(template):
    function = template["Resources"]["ClassifierFunction"]
    props, meta = function["Properties"], function["Metadata"]
    assert props["PackageType"] == "Image" and props["Tracing"] == "Active"
    assert props["Architectures"] == [{"Ref": "Architecture"}]
    assert props["MemorySize"] == {"Ref": "MemorySize"} and props["Timeout"] == {"Ref": "Timeout"}
    assert props["ReservedConcurrentExecutions"] == {"Fn::If": ["HasReservedConcurrency", {"Ref": "ReservedConcurrency"},
                                                               {"Ref": "AWS::NoValue"}]}
    assert template["Conditions"]["HasReservedConcurrency"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "ReservedConcurrency"}, "-1"]}]}
    variables = props["Environment"]["Variables"]
    assert variables["MODEL_PRECISION"] == {"Ref": "ModelPrecision"}
    assert variables[INT8_KERNEL_ENV] == {"Ref": "Int8Kernel"} and variables[ALLOW_CANARY_FAILURE_ENV] == {"Ref": "AllowCanaryFailure"}
    assert (ROOT / meta["Dockerfile"]).is_file() and (ROOT / meta["DockerContext"]).resolve() == ROOT

    dockerfile = parse_dockerfile(ROOT / meta["Dockerfile"])
    assert re.fullmatch(r"public\.ecr\.aws/lambda/python:3\.12@sha256:[0-9a-f]{64}", dockerfile.base)  # pinned by digest
    assert dockerfile.cmd == ["lambda_onnx.handler.handler"]
    assert set(meta["DockerBuildArgs"]) == {"MODEL", "SIDECAR", "CANARY"} <= set(dockerfile.args)
    for key in ("MODEL", "SIDECAR", "CANARY"):
        lookup = meta["DockerBuildArgs"][key]["Fn::FindInMap"]
        assert lookup[:2] == ["ModelFiles", {"Ref": "ModelPrecision"}]
    files = template["Mappings"]["ModelFiles"]
    assert set(files) == {"fp32", "int8"}
    for precision, entry in files.items():
        # the names the export and the quantiser write: <arch>.onnx / <arch>.int8.onnx, sidecar next to it
        assert entry["Model"].endswith(".int8.onnx" if precision == "int8" else ".onnx")
        assert entry["Sidecar"] == str(sidecar_path(Path(entry["Model"])))
        assert entry["Canary"] == str(canary_path(Path(entry["Model"])))
    assert files["fp32"]["Model"] == dockerfile.args["MODEL"] and files["fp32"]["Sidecar"] == dockerfile.args["SIDECAR"]
    assert files["fp32"]["Canary"] == dockerfile.args["CANARY"]


def test_role_holds_only_logs_to_its_own_group_and_tracing(template):
    for function in resources_of(template, "AWS::Serverless::Function").values():
        assert function["Properties"]["Role"] == {"Fn::GetAtt": ["FunctionRole", "Arn"]} and "Policies" not in function["Properties"]
    (role,) = resources_of(template, "AWS::IAM::Role").values()
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    arns = [arn["Fn::Sub"] for arn in role["Properties"]["ManagedPolicyArns"]]
    assert arns == ["arn:${AWS::Partition}:iam::aws:policy/AWSXRayDaemonWriteAccess"]  # no account-wide logs policy
    assert "Policies" not in role["Properties"]
    (logs,) = resources_of(template, "AWS::IAM::RolePolicy").values()
    assert logs["Properties"]["RoleName"] == {"Ref": "FunctionRole"}
    (statement,) = logs["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow" and statement["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert statement["Resource"] == {"Fn::GetAtt": ["FunctionLogGroup", "Arn"]}  # this function's log group only
    group = resources_of(template, "AWS::Logs::LogGroup")["FunctionLogGroup"]
    assert group["Properties"]["LogGroupName"] == {"Fn::Sub": ["/aws/lambda/${FunctionName}", {"FunctionName": {
        "Fn::If": ["IsZip", {"Ref": "ClassifierZipFunction"}, {"Ref": "ClassifierFunction"}]}}]}
    kinds = {r["Type"] for r in template["Resources"].values()}
    assert not kinds & {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::S3::Bucket", "AWS::S3::BucketPolicy"}


def test_a_public_function_url_is_refused_without_a_concurrency_cap(template):
    """CloudFormation's Rules refuse FunctionUrlAuthType NONE while ReservedConcurrency is unset (-1)."""
    rule = template["Rules"]["PublicFunctionUrlNeedsAConcurrencyCap"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "FunctionUrlAuthType"}, "NONE"]}
    (assertion,) = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "ReservedConcurrency"}, "-1"]}]}
    assert "ReservedConcurrency" in assertion["AssertDescription"]
    # The rule as CloudFormation evaluates it (parameters are strings in Rules), for the values that matter.

    def holds(expression: object, values: dict[str, str]) -> object:
        if isinstance(expression, dict):
            ((function, argument),) = expression.items()
            if function == "Ref":
                return values[argument]
            args = [holds(a, values) for a in argument]
            return {"Fn::Equals": lambda: args[0] == args[1], "Fn::Not": lambda: not args[0]}[function]()
        return expression

    def allowed(**given: str) -> bool:
        values = {name: str(p.get("Default", "")) for name, p in template["Parameters"].items()} | given
        return not holds(rule["RuleCondition"], values) or bool(holds(assertion["Assert"], values))

    assert not allowed(FunctionUrlAuthType="NONE")  # public, no cap: refused
    assert allowed(FunctionUrlAuthType="NONE", ReservedConcurrency="10")
    assert allowed() and allowed(FunctionUrlAuthType="DISABLED")  # the default (AWS_IAM) needs no cap


def test_http_api_post_classify_with_cors_only_when_origins_are_given(template):
    (api,) = resources_of(template, "AWS::ApiGatewayV2::Api").values()
    assert api["Properties"]["ProtocolType"] == "HTTP"
    cors = api["Properties"]["CorsConfiguration"]["Fn::If"]
    assert cors[0] == "HasCors" and cors[1]["AllowOrigins"] == {"Ref": "CorsOrigins"} and cors[2] == {"Ref": "AWS::NoValue"}
    assert template["Conditions"]["HasCors"] == {"Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "CorsOrigins"}]}, ""]}]}
    (route,) = resources_of(template, "AWS::ApiGatewayV2::Route").values()
    assert route["Properties"]["RouteKey"] == "POST /classify"
    (integration,) = resources_of(template, "AWS::ApiGatewayV2::Integration").values()
    assert integration["Properties"]["PayloadFormatVersion"] == "2.0" and integration["Properties"]["IntegrationType"] == "AWS_PROXY"
    (stage,) = resources_of(template, "AWS::ApiGatewayV2::Stage").values()
    assert stage["Properties"]["StageName"] == "$default" and stage["Properties"]["AutoDeploy"] is True
    permissions = resources_of(template, "AWS::Lambda::Permission")
    api_permission = next(p for p in permissions.values() if p["Properties"]["Principal"] == "apigateway.amazonaws.com")
    assert api_permission["Properties"]["SourceArn"]["Fn::Sub"].endswith("${HttpApi}/*/POST/classify")


def test_function_url_is_optional_and_iam_by_default(template):
    (url,) = resources_of(template, "AWS::Lambda::Url").values()
    assert url["Condition"] == "HasFunctionUrl" and url["Properties"]["AuthType"] == {"Ref": "FunctionUrlAuthType"}
    public = [p for p in resources_of(template, "AWS::Lambda::Permission").values() if p["Properties"]["Principal"] == "*"]
    assert {p["Condition"] for p in public} == {"HasPublicFunctionUrl"}  # only a NONE URL is public
    assert {p["Properties"]["Action"] for p in public} == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}


def test_outputs(template):
    outputs = template["Outputs"]
    assert outputs["ApiEndpoint"]["Value"]["Fn::Sub"].endswith("/classify")
    assert outputs["FunctionUrlEndpoint"]["Condition"] == "HasFunctionUrl"
    assert outputs["FunctionName"]["Value"] == FUNCTION_NAME


def test_dashboard_shows_the_metrics_the_handler_emits(template):
    (dashboard,) = resources_of(template, "AWS::CloudWatch::Dashboard").values()
    text, variables = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    assert variables == {"FunctionName": FUNCTION_NAME}
    body = json.loads(re.sub(r"\$\{[^}]+\}", "0", text))
    namespace = template["Resources"]["ClassifierFunction"]["Properties"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
    shown: dict[str, set[str]] = {}
    for widget in body["widgets"]:
        last_namespace = None
        for metric in widget["properties"]["metrics"]:
            if metric[0] not in (".", "..."):
                last_namespace = metric[0]
            if metric[0] != "..." and len(metric) > 1 and isinstance(metric[1], str):
                shown.setdefault(last_namespace, set()).add(metric[1])
    handler_source = (ROOT / "lambda_onnx" / "handler.py").read_text()
    emitted = set(re.findall(r'add_metric\(name="?(\w+)', handler_source)) | set(re.findall(r'"(\w+Errors)"', handler_source))
    assert "capture_cold_start_metric=True" in handler_source  # powertools emits "ColdStart"
    assert shown[namespace] <= emitted | {"ColdStart"} and {"ColdStart", "PeakRss", "HandlerDuration"} <= shown[namespace]
    assert {"Duration", "Errors", "Throttles", "Invocations"} <= shown["AWS/Lambda"]



# The SAM CLI, in a virtualenv of its own (.ci/install): its pins clash with this project's.
SAM_CLI = ROOT / ".venv" / "sam-cli" / "bin"
RESOLVE = """
import json, sys
from samcli.lib.providers.sam_function_provider import SamFunctionProvider
from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider

stacks, _ = SamLocalStackProvider.get_stacks(sys.argv[1], parameter_overrides={"ModelPrecision": sys.argv[2]})
print(json.dumps([{"name": f.name, "packagetype": f.packagetype, "memory": f.memory, "metadata": f.metadata}
                  for f in SamFunctionProvider(stacks).get_all()]))
"""


def sam_env(tmp_path: Path) -> dict[str, str]:
    # No telemetry; no Docker, even on a machine that has one: `sam build` must stop at that boundary.
    return {"PATH": f"{SAM_CLI}:/usr/bin:/bin", "HOME": str(tmp_path), "SAM_CLI_TELEMETRY": "0",
            "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock", "LANG": "C.UTF-8"}


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.slow
def test_the_sam_cli_resolves_the_image_build_for_each_precision(precision, tmp_path):
    """What `sam build --parameter-overrides ModelPrecision=...` hands to `docker build`, resolved by
    the SAM CLI's own template provider: the Dockerfile, this directory, and that precision's model."""
    out = subprocess.run([str(SAM_CLI / "python"), "-c", RESOLVE, str(TEMPLATE), precision], capture_output=True,
                         text=True, timeout=120, cwd=ROOT, env=sam_env(tmp_path))
    assert out.returncode == 0, out.stderr
    functions = {f["name"]: f for f in json.loads(out.stdout.splitlines()[-1])}
    assert set(functions) == {"ClassifierFunction", "ClassifierZipFunction"}  # SAM CLI ignores the Conditions
    function = functions["ClassifierFunction"]
    assert function["packagetype"] == "Image" and function["memory"] == 3008
    meta = function["metadata"]
    model = Path(meta["DockerBuildArgs"]["MODEL"])
    assert model.name == ("resnet50.int8.onnx" if precision == "int8" else "resnet50.onnx")
    assert meta["DockerBuildArgs"]["SIDECAR"] == str(sidecar_path(model)) and meta["DockerTag"] == precision
    assert meta["DockerBuildArgs"]["CANARY"] == str(canary_path(model))
    assert (ROOT / meta["DockerContext"] / meta["Dockerfile"]).is_file()


@pytest.mark.slow
def test_sam_build_gets_as_far_as_docker(tmp_path):
    """The real `sam build` with the INT8 override: the template and its build arguments are
    accepted, and the only thing missing is the container runtime."""
    out = subprocess.run([str(SAM_CLI / "sam"), "build", "ClassifierFunction", "--parameter-overrides", "ModelPrecision=int8",
                          "--build-dir", str(tmp_path / "build")], capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env=sam_env(tmp_path))
    text = out.stdout + out.stderr
    assert "Building image for ClassifierFunction function" in text and "Setting DockerBuildArgs" in text, text
    assert out.returncode != 0 and "requires a container runtime" in text


# --- the zip package with SnapStart, and provisioned concurrency (PackageType, ProvisionedConcurrency) ------

INVOKED = {"Fn::If": ["IsZip", {"Ref": "ClassifierZipFunction.Alias"},
                      {"Fn::If": ["HasProvisionedConcurrency", {"Ref": "ClassifierFunction.Alias"},
                                  {"Fn::GetAtt": ["ClassifierFunction", "Arn"]}]}]}


def test_the_package_type_chooses_the_image_or_the_zip_with_snapstart(template):
    params = template["Parameters"]
    assert (params["PackageType"]["Default"], params["PackageType"]["AllowedValues"]) == ("Image", ["Image", "Zip"])
    image, zipped = template["Resources"]["ClassifierFunction"], template["Resources"]["ClassifierZipFunction"]
    assert (image["Condition"], zipped["Condition"]) == ("IsImage", "IsZip")
    props = zipped["Properties"]
    assert (props["PackageType"], props["Runtime"], props["Handler"]) == ("Zip", "python3.12", "lambda_onnx.handler.handler")
    assert props["SnapStart"] == {"ApplyOn": "PublishedVersions"} and props["AutoPublishAlias"] == "live"
    assert zipped["Metadata"] == {"BuildMethod": "makefile"} and (ROOT / props["CodeUri"] / "Makefile").is_file()
    assert f"build-{'ClassifierZipFunction'}:" in (ROOT / "Makefile").read_text()  # the target SAM's makefile builder runs
    # Both functions run the same core with the same settings; only how it is packaged differs.
    assert props["Environment"]["Variables"].keys() == image["Properties"]["Environment"]["Variables"].keys()
    for key in ("Architectures", "MemorySize", "Timeout", "Tracing", "Role", "EphemeralStorage", "ReservedConcurrentExecutions"):
        assert props[key] == image["Properties"][key], key
    assert "SnapStart" not in image["Properties"]  # Lambda supports SnapStart on managed runtimes only, not images


def test_snapstarts_limits_are_rules_of_the_template(template):
    rules = template["Rules"]
    assert rules["SnapStartLimits"]["RuleCondition"] == {"Fn::Equals": [{"Ref": "PackageType"}, "Zip"]}
    asserts = [a["Assert"] for a in rules["SnapStartLimits"]["Assertions"]]
    assert {"Fn::Equals": [{"Ref": "ProvisionedConcurrency"}, "0"]} in asserts
    assert {"Fn::Equals": [{"Ref": "EphemeralStorage"}, "512"]} in asserts
    assert [a["Assert"] for a in rules["ZipHoldsTheInt8Model"]["Assertions"]] == [{"Fn::Equals": [{"Ref": "ModelPrecision"}, "int8"]}]
    assert template["Parameters"]["EphemeralStorage"]["MinValue"] == 512


def test_the_api_and_the_url_invoke_the_alias_when_a_version_is_published(template):
    resources = template["Resources"]
    assert resources["HttpApiIntegration"]["Properties"]["IntegrationUri"] == INVOKED
    for name in ("HttpApiInvokePermission", "PublicFunctionUrlPermission", "PublicFunctionUrlInvokePermission"):
        assert resources[name]["Properties"]["FunctionName"] == INVOKED, name
    url = resources["FunctionUrl"]["Properties"]
    assert url["TargetFunctionArn"] == FUNCTION_NAME and url["Qualifier"]["Fn::If"][:2] == ["InvokesAlias", "live"]
    image = resources["ClassifierFunction"]["Properties"]
    assert image["ProvisionedConcurrencyConfig"]["Fn::If"][1] == {"ProvisionedConcurrentExecutions": {"Ref": "ProvisionedConcurrency"}}
    assert template["Conditions"]["HasProvisionedConcurrency"]["Fn::And"][0] == {"Condition": "IsImage"}
    assert resources["FunctionLogGroup"]["Properties"]["LogGroupName"]["Fn::Sub"][1] == {"FunctionName": FUNCTION_NAME}


@pytest.mark.slow
def test_cfn_lint_refuses_a_rule_broken_copy(tmp_path):
    broken = tmp_path / "template.yaml"
    broken.write_text(TEMPLATE.read_text().replace("      SnapStart:\n        ApplyOn: PublishedVersions\n",
                                                   "      SnapStart:\n        ApplyOn: Always\n"))
    out = lint(broken)
    assert out.returncode != 0 and "Always" in out.stdout


@pytest.mark.slow
def test_sam_build_builds_the_zip_package_with_the_makefile(tmp_path, lite0_int8):
    """The real `sam build` of the zip function, in source (no copy of the repository), without Docker:
    SAM's makefile builder runs the Makefile's target, which leaves the package in the build directory."""
    env = {**sam_env(tmp_path), "MODEL": str(lite0_int8), "PYTHON": sys.executable}
    out = subprocess.run([str(SAM_CLI / "sam"), "build", "ClassifierZipFunction", "--build-in-source",
                          "--parameter-overrides", "PackageType=Zip ModelPrecision=int8", "--build-dir", str(tmp_path / "build")],
                         capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    package = tmp_path / "build" / "ClassifierZipFunction"
    assert {"lambda_onnx", "model", "onnxruntime", "numpy"} <= {p.name for p in package.iterdir()}, text
    assert (package / "model" / "model.onnx").stat().st_size == lite0_int8.stat().st_size
    built = (tmp_path / "build" / "template.yaml").read_text()
    assert "CodeUri: ClassifierZipFunction" in built and "Build Succeeded" in text


# The SAM transform as CloudFormation runs it at deploy time, from the SAM CLI's virtualenv: the code
# `sam package` uploads stands in for the build's (an image URI, an S3 object).
TRANSFORM = """
import json, sys
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

template = yaml_parse(open(sys.argv[1]).read())
resources = template["Resources"]
resources["ClassifierFunction"]["Properties"]["ImageUri"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/r:int8"
resources["ClassifierZipFunction"]["Properties"]["CodeUri"] = "s3://bucket/function.zip"

class NoManagedPolicies:
    def load(self):
        return {}

try:
    out = transform(template, json.loads(sys.argv[2]), NoManagedPolicies())
except InvalidDocumentException as exc:
    print(json.dumps({"invalid": [str(cause) for cause in exc.causes]}))
    sys.exit(0)
print(json.dumps(out["Resources"]))
"""


@pytest.mark.slow
def test_the_sam_transform_accepts_every_package_type(tmp_path):
    """SnapStart, the alias and the conditional references as AWS's SAM translator expands them."""
    def expand(**parameters: str) -> dict:
        out = subprocess.run([str(SAM_CLI / "python"), "-c", TRANSFORM, str(TEMPLATE), json.dumps(parameters)],
                             capture_output=True, text=True, timeout=120, cwd=ROOT,
                             env={**sam_env(tmp_path), "AWS_DEFAULT_REGION": "us-east-1"})
        assert out.returncode == 0, out.stderr
        resources = json.loads(out.stdout.splitlines()[-1])
        assert "invalid" not in resources, resources
        return resources

    resources = expand(PackageType="Zip", ModelPrecision="int8")
    zipped = resources["ClassifierZipFunction"]
    assert zipped["Type"] == "AWS::Lambda::Function" and zipped["Condition"] == "IsZip"
    assert zipped["Properties"]["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert zipped["Properties"]["Runtime"] == "python3.12" and zipped["Properties"]["Code"]["S3Bucket"] == "bucket"
    versions = {name: r for name, r in resources.items() if r["Type"] == "AWS::Lambda::Version"}
    aliases = {name: r for name, r in resources.items() if r["Type"] == "AWS::Lambda::Alias"}
    assert {r["Condition"] for r in versions.values()} == {r["Condition"] for r in aliases.values()} == {"IsImage", "IsZip"}
    assert resources["HttpApiIntegration"]["Properties"]["IntegrationUri"] == {
        "Fn::If": ["IsZip", {"Ref": "ClassifierZipFunctionAliaslive"},
                   {"Fn::If": ["HasProvisionedConcurrency", {"Ref": "ClassifierFunctionAliaslive"},
                               {"Fn::GetAtt": ["ClassifierFunction", "Arn"]}]}]}
    image = expand(PackageType="Image", ProvisionedConcurrency="2")
    alias = image["ClassifierFunctionAliaslive"]["Properties"]
    assert alias["ProvisionedConcurrencyConfig"]["Fn::If"][0] == "HasProvisionedConcurrency"
