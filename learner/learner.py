"""Learner: one rank of the DeepSpeed learner. Samples from the replay shards, takes optimizer
steps with the configured objective (learner/objectives/registry.py: sft, ppo, grpo), and rank 0
broadcasts the weights to the actors.

A plain class that launch/ wraps with `ray.remote`, one per rank (`learner.world_size`); the
ranks form DeepSpeed's process group (gloo on CPU, NCCL on GPUs) and average gradients. The
training loop runs on its own thread so Ray calls (stats, stop) answer while it trains. The
ranks move in lockstep: before each step rank 0 decides (pacing, stop) and broadcasts its
decision, so no rank ever waits in a collective that another has left. Each rank draws its own
batch (its own RNG stream); rank 0 alone talks to the actors.

Every `sync_every` steps rank 0 bumps the policy version and broadcasts the weights (not the
value head) through its WeightPlane (weights/plane.py: the actors, their group, the
sender for CPU or GPU engines, with or without LoRA, and the recovery from a dead actor); the
control side has a timeout. Under ZeRO-3 every rank gathers the parameters for the broadcast.
With `lora.enabled` the policy is wrapped with peft before DeepSpeed sees it (only the adapter
trains).

Checkpoints (learner/checkpoint.py) every `checkpoint.every` steps and when stopped. With
`resume_from` every rank restores its DeepSpeed state and RNG streams; rank 0 also the step,
policy version and counters (the pacing state), and broadcasts its weights before the first
step. Checkpoints also record each actor's task-sampler position, which launch/ hands back to
the actors of a resumed run, and (`checkpoint.replay`) each shard's replay, which launch/ gives the
shards of a resumed run to start from.

NOT guaranteed: `samples_per_insert` is paced on rank 0's draws × world size; priority updates
of steps evicted since their draw are dropped by the shard (counted as stale).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from pathlib import Path

import numpy as np
import ray
import torch
import torch.distributed as dist

from buffer.net.directory import ShardDirectory
from buffer.net.sharded_clients import ShardedSampleClient
from buffer.ray_restart import node_address
from learner import deepspeed_setup
from learner.checkpoint import load_checkpoint, save_checkpoint, save_replay
from learner.config import AlgorithmConfig, CheckpointConfig, LearnerConfig
from learner.lora import wrap_lora
from learner.objectives.items import TrainItem, episode_items, step_items
from learner.objectives.registry import make_objective
from learner.pacing import Pacing
from weights.config import WeightsConfig
from weights.plane import WeightPlane

GO, WAIT, STOP = 1, 0, -1
REPLAY_EXPORT_TIMEOUT_S = 600  # the shards write their whole replay (hundreds of MB at capacity)
STOP_TIMEOUT_S = 300 + REPLAY_EXPORT_TIMEOUT_S  # the last step, then the final checkpoint

log = logging.getLogger(__name__)


class Learner:
    def __init__(self, model_path: str, shard_addresses: list[str], shard_names: list[str], *,
                 ds_config: dict, algorithm: AlgorithmConfig, learner: LearnerConfig, weights: WeightsConfig,
                 checkpoint: CheckpointConfig, checkpoint_dir: str, namespace: str,
                 resume_from: str | None = None, seed: int = 0, rank: int = 0,
                 master: tuple[str, int] | None = None, group_size: int = 1):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.rank, self.world_size = rank, learner.world_size
        torch.manual_seed(seed + rank)
        torch.set_num_threads(learner.threads)
        self.cfg, self.weights_cfg = learner, weights
        self.checkpoint_cfg, self.checkpoint_dir = checkpoint, checkpoint_dir
        self.rng = np.random.default_rng(seed + rank)
        host, port = master or ("127.0.0.1", deepspeed_setup.free_port())
        deepspeed_setup.init_rank(rank, self.world_size, host, port, learner.backend)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.objective = make_objective(algorithm, self.tokenizer, max_len=learner.max_len)
        # bf16 engines cast the parameters anyway (their fp32 master copy is made from the bf16
        # values): loading in fp32 first would only double each rank's host memory.
        bf16 = ds_config.get("bf16", {}).get("enabled", False)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16 if bf16 else torch.float32)
        self.lora = learner.lora.enabled
        if self.lora:
            model = wrap_lora(model, learner.lora)
        model = self.objective.wrap(model)
        self.ds_engine, self.scheduler = deepspeed_setup.initialize(model, ds_config)
        self.pacing = Pacing(batch_size=learner.batch_size, min_replay_steps=learner.min_replay_steps,
                             samples_per_insert=learner.samples_per_insert,
                             groups=self.objective.sampling == "groups", group_size=group_size)
        # Model FLOPs utilization: per trained token 2N forward + 2N backward through the
        # activations + 2N' for the weight gradients of the N' trainable parameters (6N without
        # LoRA; attention left out, as in nanoGPT's and PaLM's estimate) over this rank's peak.
        policy = self._policy()
        self._flops_per_token = (4 * deepspeed_setup.param_count(policy)
                                 + 2 * deepspeed_setup.param_count(policy, trainable_only=True))
        directory = ShardDirectory(shard_names, namespace)  # follows a shard Ray restarted elsewhere
        self.replay_client = ShardedSampleClient(shard_addresses, resolvers=[directory.resolver(i)
                                                                             for i in range(len(shard_names))])
        self.replay_client.rng = self.rng  # one stream for the cross-shard split: checkpoints restore it
        self.shards = [ray.get_actor(n, namespace=namespace) for n in shard_names]
        self.plane = WeightPlane(self._policy(), lora=self.lora, timeout_s=weights.timeout_s,
                                 bucket_bytes=weights.bucket_mb << 20)

        self.step = 0
        self.policy_version = 0
        self._stats = collections.Counter()
        self._last: dict = {}
        self._resumed = resume_from is not None
        if resume_from is not None:
            state = load_checkpoint(resume_from, self.ds_engine, rank=rank)
            self.step, self.policy_version = state["step"], state["policy_version"]
            self._stats.update(state["counters"])
            self.rng.bit_generator.state = state["numpy_rng"]
            self._last["resumed_from"] = str(resume_from)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # ---- weight plane (rank 0) --------------------------------------------------------------
    def connect_actors(self, actors: list, host: str | None, backend: str, engine_ranks: list[int] | None = None) -> None:
        """Rank 0: the actors to sync and the weight group joining them (weights/plane.py), its
        store on `host` (None: this rank's node); `engine_ranks` (workers per actor's engine)
        marks GPU engines."""
        self.plane.connect(actors, host or node_address(), backend, engine_ranks)

    def _policy(self) -> torch.nn.Module:
        """The module the actors serve: the LM without PPO's value head."""
        module = self.ds_engine.module
        return getattr(module, "lm", module)

    def sync_weights(self) -> int:
        """Broadcast the current weights as a new policy version to every connected actor.
        Collective over the learner ranks under ZeRO-3 (call it on every rank)."""
        version = self.policy_version + 1
        t0 = time.perf_counter()
        with deepspeed_setup.full_parameters(self.ds_engine, self._policy()):
            if self.rank == 0 and self.plane.actors:
                self._last["sync_bytes"] = self.plane.sync(version)
                self._stats["weight_plane_rebuilds"] = self.plane.rebuilds
        self.policy_version = version
        self._stats["weight_syncs"] += 1
        self._last["sync_s"] = time.perf_counter() - t0
        self._stats["time_sync_s"] += self._last["sync_s"]
        return version

    # ---- training loop ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"learner-{self.rank}", daemon=True)
        self._thread.start()

    def stop(self) -> dict:
        """Stop after the current step (rank 0 tells the others) and take the final checkpoint.
        Call it on every rank."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT_S)
            if self._thread.is_alive() and self._error is None:  # say so, or a resume silently
                self._error = TimeoutError(  # picks an older checkpoint
                    f"the learner did not stop within {STOP_TIMEOUT_S} s: its final checkpoint is unfinished")
        self.replay_client.close()
        self.plane.close()
        return self.stats()

    def save_checkpoint(self) -> str:
        """Collective: every rank writes its DeepSpeed shard; rank 0 the model and its state."""
        state = {"step": self.step, "policy_version": self.policy_version, "counters": dict(self._stats),
                 "numpy_rng": self.rng.bit_generator.state}
        if self.rank == 0 and self.plane.actors:  # so a resumed run's actors go on with new seeds
            samplers = ray.get([a.sampler_state.remote() for a in self.plane.actors],
                               timeout=self.weights_cfg.timeout_s)
            state["task_samplers"] = {s["actor_id"]: s["episodes_started"] for s in samplers}
        with_replay = self.rank == 0 and self.checkpoint_cfg.replay
        path = save_checkpoint(self.checkpoint_dir, self.ds_engine, self._policy(), self.tokenizer, state,
                               keep=self.checkpoint_cfg.keep, rank=self.rank,
                             extra=self._save_replay if with_replay else None)
        self._last["checkpoint"] = str(path)
        return str(path)

    def _save_replay(self, directory: Path) -> None:
        saved = save_replay(self.shards, directory, REPLAY_EXPORT_TIMEOUT_S)
        if "error" in saved:
            self._stats["checkpoint_replay_failures"] += 1
            log.warning("checkpoint %s without its replay: %s", directory.name, saved["error"])
        for key in ("error", "trajectories", "seconds"):  # only this checkpoint's
            self._last.pop(f"checkpoint_replay_{key}", None)
        self._last.update({f"checkpoint_replay_{k}": v for k, v in saved.items()})

    def stats(self) -> dict:
        return dict(self._stats, **self._last, step=self.step, policy_version=self.policy_version,
                    rank=self.rank, error=repr(self._error) if self._error else None)

    def _run(self) -> None:
        try:
            if self._resumed:
                if self.rank == 0:
                    self.pacing.rebase(self._shard_stats(), self._stats["sampled"])
                self.sync_weights()  # the actors started from the base model
            while True:
                decision = self._decide()
                if decision == STOP:
                    break
                if decision == WAIT:
                    time.sleep(0.2)
                    self._stats["time_wait_s"] += 0.2
                    continue
                self.train_step()
                if self.step % self.cfg.sync_every == 0:
                    self.sync_weights()
                if self.checkpoint_cfg.every and self.step % self.checkpoint_cfg.every == 0:
                    self.save_checkpoint()
            if self.step > 0:
                self.save_checkpoint()
        except BaseException as e:
            self._error = e
            raise

    def _decide(self) -> int:
        """Rank 0's decision (go / wait / stop), the same on every rank."""
        decision = STOP
        if self.rank == 0 and not self._stop.is_set():
            state = self.pacing.ready(self._shard_stats(), self._stats["sampled"])
            decision = GO if state == "go" else WAIT
            if state == "rate":
                self._stats["waits_rate_limit"] += 1
        if self.world_size > 1:
            flag = torch.tensor([decision], dtype=torch.int64, device=self.ds_engine.device)  # NCCL: on the GPU
            dist.broadcast(flag, src=0)
            decision = int(flag)
        return decision

    def _shard_stats(self) -> list[dict]:
        return ray.get([s.stats.remote() for s in self.shards])

    def _draw(self) -> list[TrainItem]:
        """This rank's batch: steps, or the steps of whole episodes drawn as groups, split over
        the shards by priority (or complete-group) mass, so the union is one prioritized sample.
        The shards' recency and staleness gate count versions from the learner's own."""
        self.replay_client.policy_version = max(self.replay_client.policy_version or 0, self.policy_version)
        if self.objective.sampling == "steps":
            return step_items(self.replay_client.sample(self.pacing.draws))
        return episode_items(self.replay_client.sample_groups(self.pacing.draws))

    def train_step(self) -> float:
        """One optimizer step: `grad_accum` micro-batches, each drawn, scored and backpropagated."""
        t0 = time.perf_counter()
        self.ds_engine.train()
        losses, tokens, samples, versions, parts = [], 0, 0, [], collections.defaultdict(list)
        drawing = 0.0  # seconds of this step spent on replay round trips
        for _ in range(self.cfg.grad_accum):
            t_draw = time.perf_counter()
            items = self._draw()
            while not items:  # a shard may have said "retry" (its own rate limiter)
                time.sleep(0.05)
                items = self._draw()
            drawing += time.perf_counter() - t_draw
            loss, metrics, priorities, n_tokens = self.objective.loss(self.ds_engine, items)
            self.ds_engine.backward(loss)
            self.ds_engine.step()
            if priorities is not None:
                self._update_priorities(items, priorities)
            losses.append(float(loss))
            tokens, samples = tokens + n_tokens, samples + len(items)
            versions += [it.policy_version for it in items]
            for k, v in metrics.items():
                parts[k].append(float(v))
        self.step += 1
        dt = time.perf_counter() - t0
        self._stats["time_draw_s"] += drawing
        self._stats["time_train_s"] += dt - drawing
        self._stats["sampled"] += samples * self.world_size
        self._stats["tokens"] += tokens
        self._last.update({k: float(np.mean(v)) for k, v in parts.items()})
        self._last.update(loss=float(np.mean(losses)), lr=float(self.scheduler.get_last_lr()[0]),
                          grad_norm=float(self.ds_engine.get_global_grad_norm() or 0.0),
                          step_s=dt, tokens_per_s=tokens / dt, samples_per_s=samples / dt,
                          staleness=self.policy_version - float(np.mean(versions)))
        if self.cfg.peak_tflops and torch.cuda.is_available():
            self._last["mfu"] = self._flops_per_token * tokens / dt / (self.cfg.peak_tflops * 1e12)
        return self._last["loss"]

    def _update_priorities(self, items: list[TrainItem], priorities: torch.Tensor) -> None:
        """New priorities (e.g. |advantage|) back to the shards the steps came from."""
        prio = priorities.detach().double().cpu().numpy() + 1e-6  # a zero priority would never be drawn again
        reply = self.replay_client.update_priorities([it.key for it in items], prio, [it.shard for it in items])
        self._stats["priority_updates"] += int(reply.get("updated", 0))
