"""Learner: samples steps from the replay shards, takes DeepSpeed steps, broadcasts weights.

A plain class that launch/ wraps with `ray.remote` (one per learner rank; this issue runs one).
The training loop runs on its own thread so Ray calls (stats, stop) answer while it trains.
Every `sync_every` steps rank 0 bumps the policy version and broadcasts the weights over the
weight-plane group; the control side (the actors' `update_weights` Ray calls) has a timeout.

Pacing: the learner waits until the replay holds `min_replay_steps` steps, and keeps the steps it
has sampled within `samples_per_insert` × the steps the replay has stored, so a fast learner
cannot over-fit the first few successes while the actors are still collecting.

Snapshots (learner/snapshot.py) every `snapshot.every` steps and at stop. With `resume_from`,
the learner restores its DeepSpeed state, step, policy version, pacing counter and RNG states,
and broadcasts its weights before its first step (the actors start from the base model).

NOT guaranteed (this issue): one rank only; SFT only.
"""

from __future__ import annotations

import collections
import threading
import time

import numpy as np
import ray
import torch

from buffer.client import SampleClient
from learner import deepspeed_setup
from learner.sft import collate, sft_loss
from learner.snapshot import load_snapshot, save_snapshot
from learner.weight_group import host_store, open_weight_group
from learner.weight_sender import WeightSender


class Learner:
    def __init__(self, model_path: str, shard_addresses: list[str], shard_names: list[str], *,
                 ds_config: dict, algorithm: dict, learner: dict, weights: dict, namespace: str,
                 snapshot: dict, resume_from: str | None = None, seed: int = 0):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.manual_seed(seed)
        torch.set_num_threads(learner["threads"])
        self.cfg, self.algo, self.weights_cfg = dict(learner), dict(algorithm), dict(weights)
        self.rng = np.random.default_rng(seed)
        deepspeed_setup.init_rank(0, 1, "127.0.0.1", deepspeed_setup.free_port(), learner["backend"])
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        self.engine, self.scheduler = deepspeed_setup.initialize(model, ds_config)
        self.samplers = [SampleClient(a) for a in shard_addresses]
        self.shards = [ray.get_actor(n, namespace=namespace) for n in shard_names]
        self.actors: list = []
        self.sender: WeightSender | None = None
        self._store = None

        self.step = 0
        self.policy_version = 0
        self._stats = collections.Counter()
        self._last: dict = {}
        self.snapshot_cfg = dict(snapshot)
        self._resumed = resume_from is not None
        if resume_from is not None:
            state = load_snapshot(resume_from, self.engine)
            self.step, self.policy_version = state["step"], state["policy_version"]
            self._stats.update(state["counters"])
            self.rng.bit_generator.state = state["numpy_rng"]
            self._last["resumed_from"] = str(resume_from)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # ---- weight plane -----------------------------------------------------------------------
    def host_weight_group(self, host: str, world_size: int) -> int:
        self._store = host_store(host, world_size, self.weights_cfg["timeout_s"])
        return self._store.port

    def join_weight_group(self, host: str, world_size: int) -> None:
        group = open_weight_group(host, self._store.port, 0, world_size, self.weights_cfg["backend"],
                                  self.weights_cfg["timeout_s"], store=self._store)
        self.sender = WeightSender(group, self._named_params(), self.weights_cfg["bucket_mb"] << 20)

    def attach_actors(self, actors: list) -> None:
        self.actors = list(actors)

    def _named_params(self) -> dict[str, torch.Tensor]:
        return {n: p.data for n, p in self.engine.module.named_parameters()}

    def sync_weights(self) -> int:
        """Broadcast the current weights as a new policy version to every attached actor."""
        version = self.policy_version + 1
        t0 = time.perf_counter()
        refs = [a.update_weights.remote(version, self.sender.layout) for a in self.actors]
        sent = self.sender.send(self._named_params(), version)
        ray.get(refs, timeout=self.weights_cfg["timeout_s"])
        self.policy_version = version
        self._stats["weight_syncs"] += 1
        self._last.update(sync_s=time.perf_counter() - t0, sync_bytes=sent)
        return version

    # ---- training loop ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="learner", daemon=True)
        self._thread.start()

    def stop(self) -> dict:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
        if self.step > 0 and self._error is None:
            self.save_snapshot()
        for s in self.samplers:
            s.close()
        return self.stats()

    def save_snapshot(self) -> str:
        state = {"step": self.step, "policy_version": self.policy_version, "counters": dict(self._stats),
                 "numpy_rng": self.rng.bit_generator.state}
        path = save_snapshot(self.snapshot_cfg["dir"], self.engine, self.tokenizer, state,
                             keep=self.snapshot_cfg["keep"])
        self._last["snapshot"] = str(path)
        return str(path)

    def stats(self) -> dict:
        return dict(self._stats, **self._last, step=self.step, policy_version=self.policy_version,
                    error=repr(self._error) if self._error else None)

    def _run(self) -> None:
        try:
            if self._resumed and self.actors:
                self.sync_weights()  # the actors started from the base model
            while not self._stop.is_set():
                counts = self._draw_counts()
                if counts is None:
                    time.sleep(0.2)
                    continue
                self.train_step(counts)
                if self.actors and self.step % self.cfg["sync_every"] == 0:
                    self.sync_weights()
                if self.snapshot_cfg["every"] and self.step % self.snapshot_cfg["every"] == 0:
                    self.save_snapshot()
        except BaseException as e:
            self._error = e
            raise

    def _draw_counts(self) -> list[int] | None:
        """Per-shard sample counts in proportion to their sizes, or None while pacing says wait."""
        stats = ray.get([s.stats.remote() for s in self.shards])
        sizes = np.array([st["size_steps"] for st in stats], dtype=np.float64)
        stored = sum(st["stored_steps"] for st in stats)
        batch = self.cfg["batch_size"]
        if sizes.sum() < self.cfg["min_replay_steps"]:
            return None
        if (self._stats["sampled"] + batch) > self.cfg["samples_per_insert"] * stored:
            self._stats["waits_rate_limit"] += 1
            return None
        return self.rng.multinomial(batch, sizes / sizes.sum()).tolist()

    def train_step(self, counts: list[int]) -> float:
        t0 = time.perf_counter()
        items = []
        for sampler, n in zip(self.samplers, counts):
            if n:
                items.extend(sampler.sample(n))
        input_ids, mask, labels, weights = collate(
            items, self.tokenizer, target=self.algo["target"], max_len=self.cfg["max_len"])
        self.engine.train()
        logits = self.engine(input_ids=input_ids, attention_mask=mask).logits
        loss = sft_loss(logits, labels, weights)
        self.engine.backward(loss)
        self.engine.step()
        self.step += 1
        dt = time.perf_counter() - t0
        versions = [it["policy_version"] for it in items]
        self._stats["sampled"] += len(items)
        tokens = int(mask.sum())
        self._stats["tokens"] += tokens
        self._last.update(loss=float(loss), lr=float(self.scheduler.get_last_lr()[0]),
                          grad_norm=float(self.engine.get_global_grad_norm() or 0.0),
                          step_s=dt, tokens_per_s=tokens / dt, samples_per_s=len(items) / dt,
                          staleness=self.policy_version - float(np.mean(versions)))
        return float(loss)
