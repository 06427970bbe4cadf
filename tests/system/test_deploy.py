"""The deploy files (configs/deploy/ray-cluster.yaml for `ray up`, configs/deploy/rayjob.yaml for
KubeRay) and README's "Many machines" describe one cluster: a learner pool, an inference pool and a
CPU pool, each offering the custom resource that the documented command's `cluster.resources.*`
ask for, with room for the ranks and actors it starts, and one shared volume at `storage.root` on
every node. The commands pass Flywheel's own config checks, and the README names only real keys.

Nothing here starts Ray or talks to a cloud: the files are read and checked as data (the `ray up`
file also against Ray's own cluster-config schema)."""

import json
import re
import shlex
from pathlib import Path

import pytest
import ray
import yaml
from omegaconf import OmegaConf
from ray.autoscaler._private.util import validate_config

from launch.checks import check_all
from launch.config import Config, check_overrides, compose_config, to_config
from launch.placement import resource_request

ROOT = Path(__file__).resolve().parents[2]
RAY_CLUSTER = ROOT / "configs" / "deploy" / "ray-cluster.yaml"
RAYJOB = ROOT / "configs" / "deploy" / "rayjob.yaml"
STORAGE = "/mnt/flywheel"

# pool -> (what one node offers, how many nodes): hand-written from the three pools.
POOLS = {
    "learner": ({"GPU": 8, "learner": 8}, 1),
    "inference": ({"GPU": 8, "rollout": 8}, 2),
    "cpu": ({"replay": 4, "env": 32}, 2),
}


# ---------------------------------------------------------------------------------------------
# reading the files


def ray_cluster() -> dict:
    return yaml.safe_load(RAY_CLUSTER.read_text())


def rayjob_documents() -> list[dict]:
    return list(yaml.safe_load_all(RAYJOB.read_text()))


def rayjob() -> dict:
    (job,) = [d for d in rayjob_documents() if d["kind"] == "RayJob"]
    return job


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Many machines\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def launch_overrides(command: str) -> list[str]:
    """The Hydra overrides of a `python launch/cluster.py ...` command line."""
    words = shlex.split(command.replace("\\\n", " "))
    return [w for w in words[words.index("launch/cluster.py") + 1:] if "=" in w]


def readme_overrides() -> list[str]:
    (block,) = re.findall(r"```bash\n(.*?)```", readme_section(), flags=re.DOTALL)
    return launch_overrides(block)


def entrypoint_overrides() -> list[str]:
    return launch_overrides(rayjob()["spec"]["entrypoint"])


def kuberay_resources(value: str) -> dict:
    """rayStartParams.resources, in KubeRay's format: a JSON string holding a JSON object."""
    inner = json.loads(value)
    assert isinstance(inner, str), f"{value!r}: KubeRay wants the object quoted once more"
    return json.loads(inner)


def ray_cluster_pools() -> dict[str, tuple[dict, int]]:
    cfg = ray_cluster()
    return {name: (node["resources"], node.get("min_workers", 0))
            for name, node in cfg["available_node_types"].items() if name != cfg["head_node_type"]}


def rayjob_pools() -> dict[str, tuple[dict, int]]:
    pools = {}
    for group in rayjob()["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        offered = kuberay_resources(group["rayStartParams"]["resources"])
        (container,) = group["template"]["spec"]["containers"]
        gpus = container["resources"]["limits"].get("nvidia.com/gpu")
        pools[group["groupName"]] = ({**offered, "GPU": gpus} if gpus else offered, group["replicas"])
    return pools


def pod_specs(job: dict) -> dict[str, dict]:
    spec = job["spec"]["rayClusterSpec"]
    pods = {"head": spec["headGroupSpec"]["template"]["spec"]}
    pods.update({g["groupName"]: g["template"]["spec"] for g in spec["workerGroupSpecs"]})
    return pods


def typed(overrides: list[str]) -> Config:
    return to_config(compose_config(overrides))


DEPLOYMENTS = {"ray-cluster.yaml with README's command": (ray_cluster_pools, readme_overrides),
               "rayjob.yaml with its entrypoint": (rayjob_pools, entrypoint_overrides)}


# ---------------------------------------------------------------------------------------------
# ray-cluster.yaml


def test_ray_cluster_yaml_passes_rays_own_schema_with_a_provider_that_has_node_types():
    cfg = ray_cluster()
    validate_config({"cluster_synced_files": [], **cfg})  # raises on unknown keys, bad types, min > max
    # Ray's local provider aborts on available_node_types: three pools need a cloud provider
    assert cfg["provider"]["type"] == "aws"
    assert cfg["head_node_type"] == "head"
    assert cfg["available_node_types"]["head"]["resources"] == {"CPU": 0}  # no component lands on the head


def test_ray_cluster_yaml_node_types_are_the_three_pools_started_up_front():
    cfg = ray_cluster()
    assert ray_cluster_pools() == POOLS
    for name, node in cfg["available_node_types"].items():
        if name != "head":  # placed at start: a node still booting would outlast placement_timeout_s
            assert node["min_workers"] == node["max_workers"], name
        # a node type's own worker_setup_commands would replace setup_commands (the storage mount)
        assert "worker_setup_commands" not in node, name
    assert cfg["max_workers"] == sum(count for _, count in POOLS.values())


def test_ray_cluster_yaml_starts_ray_with_the_dashboard_on_the_heads_own_address():
    cfg = ray_cluster()
    head = cfg["head_start_ray_commands"][-1]
    assert "ray start --head --port=6379" in head
    assert "--dashboard-host=$(hostname -I | awk '{print $1}')" in head
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head  # else no autoscaler on the head
    worker = cfg["worker_start_ray_commands"][-1]
    assert "ray start --address=$RAY_HEAD_IP:6379" in worker
    # resources come from each node type (RAY_OVERRIDE_RESOURCES), never one list for every worker
    assert "--resources" not in worker
    for command in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]:
        assert "0.0.0.0" not in command
    assert "ssh -L 8265:<head-ip>:8265" in readme_section()


def test_ray_cluster_yaml_installs_the_project_and_chromium_and_mounts_storage_on_every_node():
    cfg = ray_cluster()
    assert cfg["file_mounts"] == {"~/flywheel": "."}
    setup = cfg["setup_commands"]  # run on the head and on every worker
    assert "cd ~/flywheel && ~/venv/bin/pip install -q -e '.[gpu]'" in setup
    assert any("apt-get install" in c and " chromium" in c for c in cfg["initialization_commands"])
    (mount,) = [c for c in setup if " mount " in c]
    assert mount.endswith(f":/ {STORAGE})")
    assert f"storage.root={STORAGE}" in readme_overrides()
    # ray start must find the venv's ray: the activation is in ~/.bashrc, which Ray's shells source
    assert any("source ~/venv/bin/activate" in c and ".bashrc" in c for c in setup)


# ---------------------------------------------------------------------------------------------
# rayjob.yaml


def test_rayjob_is_a_ray_io_v1_rayjob_that_deletes_its_cluster_on_the_pinned_ray():
    job = rayjob()
    assert job["apiVersion"] == "ray.io/v1"
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == ray.__version__ == "2.60.0"
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    images = {c["image"] for pod in pod_specs(job).values() for c in pod["containers"]}
    assert len(images) == 1  # one image, one Python and one Ray everywhere


def test_rayjob_worker_groups_are_the_three_pools_with_fixed_sizes():
    assert rayjob_pools() == POOLS
    for group in rayjob()["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        assert group["minReplicas"] == group["maxReplicas"] == group["replicas"], group["groupName"]
        (container,) = group["template"]["spec"]["containers"]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert limits.get("nvidia.com/gpu") == requests.get("nvidia.com/gpu"), group["groupName"]


def test_kuberay_resources_are_read_in_kuberays_quoted_format():
    assert kuberay_resources('"{\\"learner\\": 8}"') == {"learner": 8}
    with pytest.raises(AssertionError, match="quoted once more"):
        kuberay_resources('{"learner": 8}')


def test_rayjob_mounts_one_readwritemany_volume_at_storage_root_on_every_pod():
    (claim,) = [d for d in rayjob_documents() if d["kind"] == "PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    (root,) = [o.split("=", 1)[1] for o in entrypoint_overrides() if o.startswith("storage.root=")]
    assert root == STORAGE
    pods = pod_specs(rayjob())
    assert set(pods) == {"head", "learner", "inference", "cpu"}
    for name, pod in pods.items():
        volumes = {v["name"] for v in pod["volumes"]
                   if v.get("persistentVolumeClaim", {}).get("claimName") == claim["metadata"]["name"]}
        assert len(volumes) == 1, name
        for container in pod["containers"]:
            mounts = {m["mountPath"] for m in container["volumeMounts"] if m["name"] in volumes}
            assert mounts == {root}, name


def test_rayjob_gpu_pods_get_a_shared_memory_volume():
    for name, pod in pod_specs(rayjob()).items():
        (container,) = pod["containers"]
        if "nvidia.com/gpu" in container["resources"]["limits"]:
            shm = {v["name"] for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"}
            assert any(m["mountPath"] == "/dev/shm" and m["name"] in shm for m in container["volumeMounts"]), name


# ---------------------------------------------------------------------------------------------
# the commands against the pools and Flywheel's config


def test_readme_and_the_rayjob_run_the_same_overrides():
    assert sorted(readme_overrides()) == sorted(entrypoint_overrides())
    assert "cluster.address=auto" in readme_overrides()


@pytest.mark.parametrize("overrides", [readme_overrides, entrypoint_overrides], ids=["readme", "rayjob"])
def test_the_commands_pass_flywheels_config_checks(overrides):
    check_overrides(overrides())  # unknown keys, bad values: ConfigError
    check_all(typed(overrides()), None)  # wirings that cannot work, the resource specs' format


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_every_component_is_steered_to_a_pool_with_room_for_it(deployment):
    pools, overrides = (f() for f in DEPLOYMENTS[deployment])
    cfg = typed(overrides)

    def offering(key: str) -> tuple[str, float, list[tuple[dict, int]]]:
        spec = getattr(cfg.cluster.resources, key)
        assert spec, f"cluster.resources.{key} unset: that component could land anywhere"
        ((name, amount),) = resource_request(spec, f"cluster.resources.{key}").items()
        nodes = [(offer, count) for offer, count in pools.values() if offer.get(name, 0) > 0]
        assert nodes, f"cluster.resources.{key}={spec}: no node offers {name!r}"
        return name, amount, nodes

    name, amount, nodes = offering("learner")  # one placement group, packed: one node holds every rank
    ranks = cfg.learner.world_size
    assert any(offer[name] >= ranks * amount and offer.get("GPU", 0) >= ranks for offer, _ in nodes)

    name, amount, nodes = offering("actor")
    gpus = cfg.rollout.actors * cfg.engine.tensor_parallel_size
    assert sum(offer[name] * count for offer, count in nodes) >= cfg.rollout.actors * amount
    assert sum(offer.get("GPU", 0) * count for offer, count in nodes) >= gpus

    name, amount, nodes = offering("shard")
    assert sum(offer[name] * count for offer, count in nodes) >= cfg.buffer.shards * amount


def test_the_example_sizes_fill_the_gpu_pools():
    cfg = typed(readme_overrides())
    learner, inference = POOLS["learner"], POOLS["inference"]
    assert cfg.learner.world_size == learner[0]["GPU"] * learner[1] == 8
    assert cfg.rollout.actors * cfg.engine.tensor_parallel_size == inference[0]["GPU"] * inference[1] == 16


# ---------------------------------------------------------------------------------------------
# README


def test_readme_many_machines_follows_watching_a_run_and_names_both_deploy_files():
    text = (ROOT / "README.md").read_text()
    assert text.index("\n## Watching a run\n") < text.index("\n## Many machines\n")
    section = readme_section()
    for path in ("configs/deploy/ray-cluster.yaml", "configs/deploy/rayjob.yaml"):
        assert f"`{path}`" in section and (ROOT / path).is_file()


def test_readme_many_machines_names_only_keys_the_config_has():
    cfg = compose_config(readme_overrides())
    prose = re.sub(r"```.*?```", "", readme_section(), flags=re.DOTALL)
    keys = {w.split("=", 1)[0] for span in re.findall(r"`([^`]+)`", prose) for w in span.split()}
    keys = {k for k in keys if re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", k)}
    assert {"storage.root", "cluster.host", "buffer.data_dir", "cluster.nccl_socket_ifname"} <= keys
    missing = object()
    assert [k for k in sorted(keys) if OmegaConf.select(cfg, k, default=missing) is missing] == []
