"""The Kubernetes work pool for several GPUs (deploy/kubernetes/base-job-template.json) and the
deployment `uaafusion-multi-gpu` in prefect.yaml that runs on it. Fast: no server, no cluster.

The template is checked against what Prefect itself does with it, using prefect-kubernetes (a dev
dependency, pinned in pyproject.toml; it installs beside the project's prefect without changing it):

- `prefect work-pool create --type kubernetes --base-job-template FILE`: the server's
  `WorkPoolCreate` validation (every placeholder a declared variable), and its check of the
  variables schema and of job variables against it (`prefect.utilities.schema_tools`);
- Prefect's default Kubernetes template (`prefect work-pool get-default-base-job-template --type
  kubernetes`, `KubernetesWorker.get_default_base_job_template()`): ours keeps all of it, with
  compatible variable types, and adds the GPU variables;
- the Kubernetes worker: `KubernetesWorkerJobConfiguration` renders the template with the
  deployment's job variables and prepares it for a flow run as the worker does before creating
  the Job, so the pod it would submit is checked (GPU limit, /dev/shm, environment, image).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import uuid
from typing import Any, Iterator

import jsonschema
import pytest
import yaml
from prefect.client.schemas.objects import FlowRun
from prefect.server.schemas.actions import WorkPoolCreate
from prefect.utilities.schema_tools import ValidationError as PrefectValidationError
from prefect.utilities.schema_tools import is_valid_schema, validate
from prefect.utilities.templating import PlaceholderType, find_placeholders
from prefect_kubernetes.worker import KubernetesWorker, KubernetesWorkerJobConfiguration

from tests.helpers import REPO_ROOT

TEMPLATE_PATH = REPO_ROOT / "deploy" / "kubernetes" / "base-job-template.json"
MULTI_GPU = "uaafusion-multi-gpu"
SINGLE_GPU = "uaafusion-gpu"
OUR_VARIABLES = {"gpus", "shm_size", "tolerations", "node_selector"}  # what we add to Prefect's default


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return json.loads(TEMPLATE_PATH.read_text())


@pytest.fixture(scope="module")
def default_template() -> dict[str, Any]:
    return KubernetesWorker.get_default_base_job_template()


def _deployments() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    return {deployment["name"]: deployment for deployment in config["deployments"]}


def _defaults(template: dict[str, Any]) -> dict[str, Any]:
    return {name: spec["default"] for name, spec in template["variables"]["properties"].items() if "default" in spec}


def _leaves(node: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Every scalar of a JSON document with its path (keys and list indices)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, (*path, index))
    else:
        yield path, node


def _at(node: Any, path: tuple) -> Any:
    for part in path:
        node = node[part]
    return node


def _types(spec: dict[str, Any]) -> set[str]:
    """The JSON types a variable's schema allows (its `type`, or those of its `anyOf` branches)."""
    if "anyOf" in spec:
        return set().union(*(_types(branch) for branch in spec["anyOf"]))
    if "$ref" in spec:
        return {spec["$ref"]}
    kind = spec.get("type")
    if kind is None:
        raise AssertionError(f"a variable without a type: {spec}")
    return {kind} if isinstance(kind, str) else set(kind)


class _NoServer:
    """Stands in for the Prefect client: rendering this template must need no server (no block or
    variable references)."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the template asked the Prefect API for {name}")


def _worker_configuration(template: dict[str, Any], job_variables: dict[str, Any]) -> KubernetesWorkerJobConfiguration:
    """What the Kubernetes worker builds before it creates the Job of a flow run."""
    configuration = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(
        template, job_variables, client=_NoServer()))
    configuration.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), name="calm-otter", flow_id=uuid.uuid4()))
    return configuration


def _pod(configuration: KubernetesWorkerJobConfiguration) -> dict[str, Any]:
    return configuration.job_manifest["spec"]["template"]["spec"]


def test_work_pool_create_accepts_the_template(template: dict[str, Any]) -> None:
    """The server's checks for `prefect work-pool create --type kubernetes --base-job-template`."""
    pool = WorkPoolCreate(name="gpu-cluster", type="kubernetes", base_job_template=template)
    assert pool.base_job_template == template
    variables = template["variables"]
    is_valid_schema(variables, preprocess=False)  # what the server checks before validating job variables
    jsonschema.Draft7Validator.check_schema(variables)
    jsonschema.Draft7Validator(variables).validate(_defaults(template))
    assert validate(_defaults(template), variables, preprocess=True, allow_none_with_default=True) == []
    assert _defaults(template)["gpus"] == 4


def test_every_placeholder_is_a_declared_variable_and_every_variable_is_used(template: dict[str, Any]) -> None:
    placeholders = find_placeholders(json.dumps(template["job_configuration"]))
    assert {placeholder.type for placeholder in placeholders} == {PlaceholderType.STANDARD}  # no blocks, no $ENV
    used = {placeholder.name for placeholder in placeholders}
    declared = set(template["variables"]["properties"])
    assert used - declared == set(), "placeholders without a variable"
    assert declared - used == set(), "variables that no placeholder uses"
    # Prefect fills these for each flow run; they must stay placeholders, not fixed values.
    assert {"command", "env", "name", "labels"} <= used


def test_the_template_keeps_prefects_default_kubernetes_template_and_adds_the_gpu_variables(
        template: dict[str, Any], default_template: dict[str, Any]) -> None:
    ours, default = template["job_configuration"], default_template["job_configuration"]
    assert set(ours) == set(default)
    for path, value in _leaves(default["job_manifest"]):
        try:
            assert _at(ours["job_manifest"], path) == value, path
        except (KeyError, IndexError):
            pytest.fail(f"Prefect's default job manifest has {'/'.join(map(str, path))} = {value!r}; ours lacks it")
    assert {key: value for key, value in ours.items() if key != "job_manifest"} == {
        key: value for key, value in default.items() if key != "job_manifest"}

    our_variables = template["variables"]["properties"]
    default_variables = default_template["variables"]["properties"]
    assert set(our_variables) - set(default_variables) == OUR_VARIABLES
    assert set(default_variables) <= set(our_variables)
    for name in set(our_variables) & set(default_variables):
        assert _types(our_variables[name]) <= _types(default_variables[name]), name
        if "enum" in our_variables[name] or "enum" in default_variables[name]:
            assert set(our_variables[name].get("enum", ())) <= set(default_variables[name].get("enum", ())), name
    assert template["variables"]["definitions"].keys() == default_template["variables"]["definitions"].keys()
    assert our_variables["gpus"]["type"] == "integer" and our_variables["gpus"]["minimum"] == 1


@pytest.mark.parametrize("job_variables, gpus", [({}, 4), ({"gpus": 8}, 8)], ids=["default", "gpus=8"])
def test_the_pod_requests_the_gpus_and_mounts_shared_memory(template: dict[str, Any], job_variables: dict[str, Any],
                                                            gpus: int) -> None:
    pod = _pod(_worker_configuration(template, job_variables))
    (container,) = pod["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": gpus}  # unset cpu and memory are left out
    assert container["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert pod["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["restartPolicy"] == "Never"
    assert container["args"] == ["prefect", "flow-run", "execute"]  # the worker's own command: the flow run


def test_the_multi_gpu_deployment_renders_to_one_pod_with_its_gpus_and_environment(template: dict[str, Any]) -> None:
    job_variables = _deployments()[MULTI_GPU]["work_pool"]["job_variables"]
    # What the server checks when `prefect deploy` creates the deployment on this pool.
    validate({**_defaults(template), **job_variables}, template["variables"], raise_on_error=True, preprocess=True,
             ignore_required=True, allow_none_with_default=True)
    configuration = _worker_configuration(template, job_variables)
    pod = _pod(configuration)
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == job_variables["gpus"]
    assert container["image"] == job_variables["image"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert {key: env.get(key) for key in job_variables["env"]} == job_variables["env"]
    assert "CUDA_VISIBLE_DEVICES" not in env  # the pod sees the GPUs it requested, every rank one of them
    assert configuration.job_manifest["spec"]["backoffLimit"] == 0
    assert configuration.job_manifest["metadata"]["namespace"] == "default"


@pytest.mark.parametrize("bad", [{"gpus": 0}, {"gpus": "four"}, {"shm_size": 16}, {"tolerations": {}}])
def test_job_variables_of_the_wrong_type_are_refused(template: dict[str, Any], bad: dict[str, Any]) -> None:
    with pytest.raises(PrefectValidationError):
        validate({**_defaults(template), **bad}, template["variables"], raise_on_error=True, preprocess=True,
                 ignore_required=True, allow_none_with_default=True)


def test_prefect_yaml_has_a_multi_gpu_deployment_whose_processes_match_its_gpus() -> None:
    from flows.pipeline import pipeline

    deployments = _deployments()
    assert set(deployments) == {SINGLE_GPU, MULTI_GPU}
    single, multi = deployments[SINGLE_GPU], deployments[MULTI_GPU]
    assert multi["entrypoint"] == single["entrypoint"]
    flow_parameters = set(inspect.signature(pipeline.fn).parameters)
    assert set(multi["parameters"]) <= flow_parameters, (
        f"not parameters of the flow: {sorted(set(multi['parameters']) - flow_parameters)}")
    job_variables = multi["work_pool"]["job_variables"]
    assert multi["parameters"]["gpus"] == job_variables["gpus"] == 4  # processes per node == GPUs of the pod
    assert multi["work_pool"]["name"] == "gpu-cluster"
    env = job_variables["env"]
    assert "CUDA_VISIBLE_DEVICES" not in env and env["UAAFUSION_DEVICE"] == "cuda"
    assert env["UAAFUSION_PROJECT_DIR"].startswith("/")  # a pod does not inherit the worker's environment
    for key in ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_LOGGING_EXTRA_LOGGERS"):
        assert env[key] == single["work_pool"]["job_variables"]["env"][key]
    # Everything else the flow is given is the single-GPU deployment's.
    assert {key: value for key, value in multi["parameters"].items() if key != "gpus"} == single["parameters"]


def test_the_docs_create_the_pool_from_this_template() -> None:
    docs = (REPO_ROOT / "docs" / "deployment.md").read_text()
    relative = TEMPLATE_PATH.relative_to(REPO_ROOT).as_posix()
    assert f"--type kubernetes --base-job-template {relative}" in docs
    assert f"uaafusion-pipeline/{MULTI_GPU}" in docs
