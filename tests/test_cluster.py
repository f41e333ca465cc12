"""cluster/ offline: the launcher file through Ray's own validator, the KubeRay manifests
structurally (the fields this project relies on), and every job entry point they or
`mgtc submit` name: the module exists and its `build_parser()` accepts the arguments.

Convention checked here: every job module (jobs.precompute, jobs.train, jobs.evaluate,
jobs.sweep) exposes `build_parser() -> argparse.ArgumentParser` and `main(argv) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import ray
import yaml

from pipeline import submit as sub

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
MANIFESTS = sorted((CLUSTER / "kuberay").glob("*.yaml"))
IMAGE_WORKDIR = "/home/ray/mgtc"  # WORKDIR of cluster/Dockerfile
KNOWN_KINDS = {("ray.io/v1", "RayCluster"), ("ray.io/v1", "RayJob"), ("v1", "ServiceAccount"),
               ("v1", "Service"), ("v1", "PersistentVolumeClaim"), ("apps/v1", "Deployment")}
AWS_KEY = re.compile(r"AKIA[0-9A-Z]{16}|aws_secret_access_key|AWS_SECRET_ACCESS_KEY")


def documents() -> list[tuple[str, dict]]:
    return [(path.name, doc) for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(kind: str) -> list[tuple[str, dict]]:
    return [(name, doc) for name, doc in documents() if doc["kind"] == kind]


def ray_cluster_specs() -> list[tuple[str, dict]]:
    """Every RayCluster spec: standalone ones and those embedded in RayJobs."""
    specs = [(f"{name}:{doc['metadata']['name']}", doc["spec"]) for name, doc in of_kind("RayCluster")]
    specs += [(f"{name}:{doc['metadata']['name']}", doc["spec"]["rayClusterSpec"]) for name, doc in of_kind("RayJob")]
    return specs


def containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def gpus(container: dict) -> int:
    return int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


def runtime_env_vars() -> dict[str, str]:
    return yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())["env_vars"]


# ---------------------------------------------------------------------------------------
# Ray cluster launcher (AWS)
# ---------------------------------------------------------------------------------------

def launcher() -> dict:
    return yaml.safe_load((CLUSTER / "aws.yaml").read_text())


def test_launcher_passes_rays_own_validator():
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(launcher()))


def test_launcher_validator_catches_a_typo():
    """The check above is not vacuous: the schema rejects unknown keys."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = launcher()
    config["available_node_types"]["gpu_worker"]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        validate_config(prepare_config(config))


def test_launcher_layout_cpu_head_gpu_and_cpu_workers():
    config = launcher()
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "the head runs no tasks"
    gpu, cpu = types["gpu_worker"], types["cpu_worker"]
    assert gpu["node_config"]["InstanceType"].startswith(("g", "p")), "a GPU instance family"
    assert not cpu["node_config"]["InstanceType"].startswith(("g", "p"))
    for group in (gpu, cpu):
        assert group["min_workers"] == 0 < group["max_workers"] <= config["max_workers"]
    for name, node in types.items():
        assert "IamInstanceProfile" in node["node_config"], f"{name}: S3 through the instance role"


def test_launcher_image_install_and_auth():
    config = launcher()
    text = (CLUSTER / "aws.yaml").read_text()
    assert config["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert "ray-ml" not in config["docker"]["image"]
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert config["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    assert "pyproject.toml" in " ".join(config["setup_commands"]), "deps come from pyproject.toml"
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start, "dashboard only through the SSH tunnel"
    assert not AWS_KEY.search(text), "no AWS keys: instance profiles only"


def test_dockerfile_builds_on_the_same_ray_image():
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert f"ARG BASE_IMAGE=rayproject/ray:{ray.__version__}-py311-gpu" in dockerfile
    assert f"WORKDIR {IMAGE_WORKDIR}" in dockerfile


# ---------------------------------------------------------------------------------------
# KubeRay
# ---------------------------------------------------------------------------------------

def test_manifests_have_known_kinds_and_names():
    docs = documents()
    assert {name for name, _ in docs} >= {"raycluster.yaml", "rayjob-precompute.yaml", "rayjob-train.yaml"}
    for name, doc in docs:
        assert (doc["apiVersion"], doc["kind"]) in KNOWN_KINDS, f"{name}: {doc['apiVersion']} {doc['kind']}"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), name
    assert len(of_kind("RayCluster")) == 1 and len(of_kind("RayJob")) == 2


@pytest.mark.parametrize("name, spec", ray_cluster_specs(), ids=[n for n, _ in ray_cluster_specs()])
def test_ray_cluster_spec(name, spec):
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"] == {"mode": "token", "secretName": "mgtc-ray-auth"}
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0" and head.get("serviceType") == "ClusterIP"
    head_container = containers(head)[0]
    assert {p["containerPort"]: p["name"] for p in head_container["ports"]} == \
        {6379: "gcs-server", 8265: "dashboard", 10001: "client"}
    assert gpus(head_container) == 0
    groups = spec["workerGroupSpecs"]
    assert len({g["groupName"] for g in groups}) == len(groups)
    images = {c["image"] for g in [head, *groups] for c in containers(g)}
    assert len(images) == 1 and next(iter(images)).endswith(f":{ray.__version__}-py311-gpu")
    for group in [head, *groups]:
        # KubeRay's rayStartParams is map[string]string: a bare YAML number is rejected.
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
        assert group["template"]["spec"]["serviceAccountName"] == "mgtc-ray"
        for container in containers(group):
            limits = container["resources"]["limits"]
            assert {"cpu", "memory"} <= set(limits)
            assert container["resources"]["requests"].get("nvidia.com/gpu") == limits.get("nvidia.com/gpu")
    for group in groups:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        tolerations = group["template"]["spec"].get("tolerations", [])
        if any(gpus(c) for c in containers(group)):
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
        else:
            assert not tolerations, f"{group['groupName']}: CPU pods stay off GPU nodes"


def test_raycluster_has_gpu_and_cpu_groups_with_autoscaling():
    (_, cluster), = of_kind("RayCluster")
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    kinds = {g["groupName"]: any(gpus(c) for c in containers(g)) for g in spec["workerGroupSpecs"]}
    assert True in kinds.values() and False in kinds.values()
    assert all(g["minReplicas"] == 0 for g in spec["workerGroupSpecs"]), "scale from zero"


@pytest.mark.parametrize("name, job", of_kind("RayJob"), ids=[n for n, _ in of_kind("RayJob")])
def test_rayjob_shuts_down_and_carries_the_runtime_env(name, job):
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"] > 0
    assert spec["submissionMode"] == "K8sJobMode", "the submitter pod uploads the image's working dir"
    assert all(isinstance(v, str) for v in spec["metadata"].values())
    env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert env["working_dir"] == IMAGE_WORKDIR
    assert set(env["env_vars"]) == set(runtime_env_vars()), "same variables as cluster/runtime_env.yaml"
    sub.refuse_secrets(env["env_vars"].items(), "env_vars")
    sub.refuse_secrets(spec["metadata"].items(), "metadata")


def test_mlflow_server_manifest_allows_the_host_jobs_use():
    from jobs import tracking_server

    (_, deployment), = of_kind("Deployment")
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["mgtc", "tracking-server"]
    config = tracking_server.config_from_args(tracking_server.build_parser().parse_args(command[2:]))
    assert config.artifacts_destination.startswith("s3://") and deployment["spec"]["replicas"] == 1
    for _, job in of_kind("RayJob"):
        uri = urlsplit(yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]["MLFLOW_TRACKING_URI"])
        assert uri.netloc in config.allowed_hosts, f"MLflow would answer 403 to Host {uri.netloc}"
    (_, service), = of_kind("Service")
    assert service["spec"]["type"] == "ClusterIP", "browse through kubectl port-forward only"


# ---------------------------------------------------------------------------------------
# Entry points: they exist and parse the arguments the manifests give them.
# ---------------------------------------------------------------------------------------

def manifest_entrypoints() -> list[tuple[str, str]]:
    return [(f"{name}:{job['metadata']['name']}", job["spec"]["entrypoint"]) for name, job in of_kind("RayJob")]


def job_parser(module_name: str) -> argparse.ArgumentParser:
    module = importlib.import_module(module_name)
    assert callable(getattr(module, "main", None)), f"{module_name}.main(argv) -> int is missing"
    parser = module.build_parser()
    assert isinstance(parser, argparse.ArgumentParser)
    return parser


@pytest.mark.parametrize("name, command", manifest_entrypoints(), ids=[n for n, _ in manifest_entrypoints()])
def test_manifest_entry_point_exists_and_parses_its_arguments(name, command):
    tokens = shlex.split(command)
    assert tokens[:2] == ["python", "-m"] and tokens[2] in sub.JOB_MODULES.values(), command
    args = job_parser(tokens[2]).parse_args(tokens[3:])
    config = getattr(args, "config", None)
    if config:
        from pipeline.config import load_config

        assert (REPO / config).is_file(), f"{config} is not in the project (the image's {IMAGE_WORKDIR})"
        load_config(REPO / config, getattr(args, "overrides", []))


def test_train_job_asks_for_as_many_gpu_pods_as_ray_train_workers():
    from pipeline.config import load_config

    (_, job), = [(n, j) for n, j in of_kind("RayJob") if "jobs.train" in j["spec"]["entrypoint"]]
    args = job_parser("jobs.train").parse_args(shlex.split(job["spec"]["entrypoint"])[3:])
    cfg = load_config(REPO / args.config, args.overrides)
    gpu_pods = sum(g["replicas"] for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
                   if any(gpus(c) for c in containers(g)))
    assert cfg.scaling.use_gpu and gpu_pods == cfg.scaling.num_workers


@pytest.mark.parametrize("kind, module", sorted(sub.JOB_MODULES.items()))
def test_every_submittable_job_module_exposes_the_convention(kind, module):
    job_parser(module)
    assert module.replace(".", "/") + ".py" in {p.relative_to(REPO).as_posix() for p in (REPO / "jobs").glob("*.py")}


@pytest.mark.parametrize("kind, module", sorted(sub.JOB_MODULES.items()))
def test_no_job_option_is_swallowed_by_mgtc_submit(kind, module):
    """`mgtc submit` keeps its own options and passes the rest on: a job option with the
    same name would silently never reach the job."""
    from jobs import submit as submit_cli

    def options(parser: argparse.ArgumentParser) -> set[str]:
        return {o for action in parser._actions for o in action.option_strings} - {"-h", "--help"}

    assert not options(job_parser(module)) & options(submit_cli.build_parser())


def container_env(doc: dict) -> list[tuple[str, str]]:
    """(name, literal value) of every container env entry in a manifest document."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("env"), list):
                found.extend((e["name"], str(e["value"])) for e in node["env"] if "value" in e)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return found


def test_launcher_and_kuberay_files_hold_no_credentials():
    for path in [CLUSTER / "aws.yaml", CLUSTER / "runtime_env.yaml", CLUSTER / "Dockerfile", *MANIFESTS]:
        assert not AWS_KEY.search(path.read_text()), path
    sub.refuse_secrets(runtime_env_vars().items(), "env_vars")
    for name, doc in documents():
        sub.refuse_secrets(container_env(doc), f"{name} container env")
    docker_env = [o.split(None, 1)[1].partition("=")[::2] for o in launcher()["docker"]["run_options"]
                  if o.startswith("--env ")]
    sub.refuse_secrets(docker_env, "aws.yaml docker env")
