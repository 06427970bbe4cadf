"""Launch refuses wirings the weight plane cannot serve before starting anything, and the GPU
experiment composes into one it can."""

import pytest

from launch.checks import (
    check_group_sizes,
    check_lora,
    check_metrics,
    check_replay_dirs,
    check_resources,
    check_weight_plane,
)
from launch.cluster import data_dir, project_path, worker_env
from launch.config import compose_config, to_config
from launch.placement import learner_bundle, resource_request
from learner.deepspeed_setup import load_config


def composed(*overrides: str):
    return to_config(compose_config(list(overrides)))


@pytest.mark.parametrize("learner, peak", [("h100", 989), ("b200", 2250)])
def test_the_gpu_experiment_wires_gpu_engines_to_an_nccl_deepspeed_learner(learner, peak):
    cfg = composed("+exp=webgym_gpu", f"learner={learner}")
    check_lora(cfg)
    check_weight_plane(cfg)
    assert cfg.engine.backend == "gpu" and cfg.learner.backend == "nccl" and cfg.learner.peak_tflops == peak
    assert cfg.learner.lr == 1e-5 and cfg.learner.batch_size == 8  # not the tiny model's 3e-3 and 32
    ds = load_config(project_path(cfg.learner.deepspeed_config), micro_batch=cfg.learner.batch_size,
                     grad_accum=cfg.learner.grad_accum, lr=cfg.learner.lr, zero_stage=cfg.learner.zero_stage,
                     grad_clip=cfg.learner.grad_clip, warmup_steps=cfg.learner.warmup_steps)
    assert ds["bf16"]["enabled"] and ds["zero_optimization"]["stage"] == 2
    assert learner in cfg.learner.deepspeed_config


def test_gpu_engines_need_an_nccl_learner():
    cfg = composed("+exp=webgym", "engine=vllm_gpu")
    with pytest.raises(ValueError, match="engine.backend is gpu but learner.backend is not nccl"):
        check_weight_plane(cfg)


def test_the_weight_timeout_must_exceed_the_actor_call_timeout():
    check_weight_plane(composed("+exp=webgym"))
    with pytest.raises(ValueError, match="weights.timeout_s=100 must exceed rollout.call_timeout_s=120"):
        check_weight_plane(composed("+exp=webgym", "weights.timeout_s=100"))


def test_deepspeed_on_workers_uses_the_learners_accelerator(monkeypatch):
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    assert worker_env("/tmp/run", "cuda")["DS_ACCELERATOR"] == "cuda"
    assert worker_env("/tmp/run")["DS_ACCELERATOR"] == "cpu"
    monkeypatch.setenv("DS_ACCELERATOR", "xpu")  # the user's own choice wins
    assert worker_env("/tmp/run", "cuda")["DS_ACCELERATOR"] == "xpu"
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in worker_env("/tmp/run").items())  # env vars


def test_the_weight_group_is_gloo_only():
    with pytest.raises(ValueError, match="weights.backend=nccl: the weight group joins the learner to in-process"):
        check_weight_plane(composed("+exp=webgym", "weights.backend=nccl"))


def test_parameters_are_counted_whole_where_zero3_partitioned_them():
    import torch

    from learner.deepspeed_setup import param_count

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    model[0].requires_grad_(False)
    assert param_count(model) == 15 + 8 and param_count(model, trainable_only=True) == 8
    weight = model[1].weight
    weight.ds_numel, weight.data = weight.numel(), torch.empty(0)  # what ZeRO-3 leaves a rank
    assert param_count(model) == 23


def test_a_data_dir_written_by_another_shard_count_is_refused(tmp_path):
    for i in range(2):
        (tmp_path / f"shard-{i}").mkdir()
        (tmp_path / f"shard-{i}" / "log-00000001.seg").write_bytes(b"")
    check_replay_dirs(*with_dir(composed("+exp=webgym", f"buffer.data_dir={tmp_path}", "buffer.shards=2")))
    check_replay_dirs(*with_dir(composed("+exp=webgym", f"buffer.data_dir={tmp_path / 'new'}", "buffer.shards=3")))
    with pytest.raises(ValueError, match=r"holds the logs of shards \[0, 1\] but buffer.shards=3"):
        check_replay_dirs(*with_dir(composed("+exp=webgym", f"buffer.data_dir={tmp_path}", "buffer.shards=3")))


def with_dir(cfg):
    return cfg, data_dir(cfg)


def test_the_replay_draws_whole_groups_of_what_the_actors_play():
    grpo = composed("+exp=webgym_grpo")
    assert grpo.buffer.group_size == grpo.rollout.group_size == 4  # an interpolation in the experiment
    assert composed("+exp=webgym_grpo", "rollout.group_size=8").buffer.group_size == 8
    check_group_sizes(grpo)
    with pytest.raises(ValueError, match=r"buffer.group_size=2 but rollout.group_size=4"):
        check_group_sizes(composed("+exp=webgym_grpo", "buffer.group_size=2"))
    with pytest.raises(ValueError, match="algorithm ppo draws whole episodes by group, but buffer.group_size is null"):
        check_group_sizes(composed("+exp=webgym_ppo", "buffer.group_size=null"))
    check_group_sizes(composed("+exp=webgym"))  # SFT draws steps: no groups needed


@pytest.mark.parametrize("every", [0, 30, 45])
def test_metrics_are_reported_before_ray_drops_them(every):
    cfg = to_config(compose_config([f"logger.metrics.every_s={every}"]))
    with pytest.raises(ValueError, match=f"logger.metrics.every_s={every} must be above 0 and below 30"):
        check_metrics(cfg)
    check_metrics(to_config(compose_config([f"logger.metrics.every_s={every}", "logger.metrics.enabled=false"])))


def test_custom_resources_steer_or_count_and_a_bad_one_is_named():
    assert resource_request("replay", "k") == {"replay": 0.01}  # steers, never limits
    assert resource_request("rollout:2", "k") == {"rollout": 2.0}
    assert resource_request(None, "k") == {}
    for bad in ("rollout:0", "rollout:many", ":1"):
        with pytest.raises(ValueError, match=f"cluster.resources.actor={bad!r}: expected NAME or NAME:AMOUNT"):
            check_resources(composed(f"cluster.resources.actor={bad}"))


def test_a_learner_rank_bundle_holds_its_cpus_its_gpu_on_nccl_and_its_resource():
    assert learner_bundle(composed("cluster.cpus.learner=2")) == {"CPU": 2.0}
    gpu = composed("+exp=webgym_gpu", "cluster.resources.learner=b200:1")
    assert learner_bundle(gpu) == {"CPU": gpu.cluster.cpus.learner, "b200": 1.0, "GPU": 1.0}
