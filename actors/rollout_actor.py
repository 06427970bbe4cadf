"""RolloutActor: one inference engine, several env slots, trajectories streamed to replay.

Built from typed configs: the engine that `engine.backend` names (actors/engine/: make_engine),
the env that `env.name` names in the env registry (actors/env/: its backend is created once, on
the loop thread, and every slot drives its envs through it), the rollout settings
(actors/config.py) and the reward (rewards/config.py). An unknown engine, env or task and a bad
decoding constraint fail in the constructor.

Three threads: the caller's (Ray's) thread takes control calls; the loop thread owns the engine
and runs the RolloutLoop (actors/rollout_loop.py), which overlaps generation with page work;
the env backend's thread (MiniWoB++: the browser thread, actors/env/browser.py) drives every
slot's env concurrently. Control calls that use the engine — new weights, a greedy probe — are
queued to the loop thread, which first lets the requests in flight finish, so weights change
only between engine requests and the world never stops; each step carries the version that generated it. On the CPU path weights
arrive through the learner's weight group (update_weights); on the GPU path (engine.backend
gpu) through vLLM's weight-transfer engine (transfer_init / start / update / finish), with no
request submitted between start and finish. A LoRA policy's adapter arrives the same way as
weights (update_adapter), is written as a PEFT adapter directory under the run directory
(actors/engine/lora_adapter.py) and served from then on as a vLLM LoRA request.

A finished episode becomes a Trajectory, is scored by the configured reward and is inserted
into the shard its group_id (else its traj_id) routes to (buffer/net/sharded_clients.py). An episode whose
page crashed or hung ends with outcome "unknown" (success False) and is still sent; its slot gets
a fresh env (MiniWoB++: a fresh context; the browser is relaunched if it died) and the actor goes
on. A trajectory's env is "<env.name>/<task>". New episodes start only while the staleness gate
admits them (actors/staleness.py) and the actor is started and not paused. A process Ray
restarted (launch sets max_restarts) waits, unstarted, until the learner's next sync brings it
into a new weight group and starts it (weights/plane.py).

NOT guaranteed: episodes in progress at stop() are dropped (not sent); an episode whose page
failed before its first step has nothing to send (counted as episodes_lost_at_reset); the
episodes a killed process had in progress are lost with it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import queue
import threading
import time
import uuid

from actors.config import RolloutConfig
from actors.decoding import constraint_mode
from actors.engine import make_engine
from actors.engine.config import EngineConfig
from actors.engine.lora_adapter import AdapterDirs, adapter_root
from actors.env import check_task, make_env_backend
from actors.env.base import EnvBackend
from actors.env.config import EnvConfig
from actors.env.slot import EnvSlot
from actors.rollout_loop import RolloutLoop
from actors.slot_metrics import STATES, SlotMetrics
from actors.staleness import StalenessGate
from actors.task_sampler import TaskSampler
from buffer.net.directory import ShardDirectory
from buffer.net.insert_client import InsertClient
from buffer.ray_restart import restarted_by_ray
from buffer.routing import route_key, shard_for
from rewards import reward_from_config
from rewards.config import RewardConfig
from weights.group import open_weight_group
from weights.receiver import WeightReceiver

TASK_WINDOW = 100  # success per task is over each task's last TASK_WINDOW episodes


class RolloutActor:
    def __init__(self, actor_id: str, model_path: str, shard_addresses: list[str], *,
                 engine: EngineConfig, env: EnvConfig, rollout: RolloutConfig, reward: RewardConfig,
                 seed: int = 0, first_episode: int = 0, shard_names: list[str] | None = None,
                 namespace: str | None = None):
        self.actor_id = actor_id
        self.instance = uuid.uuid4().hex  # a process Ray restarted is a new instance of the actor
        self.restarted = restarted_by_ray()
        self.rollout = rollout
        constraint_mode(rollout)  # a bad or conflicting constraint key fails here
        self.env_cfg = env
        self.reward_fn = reward_from_config(reward)
        self.seed = seed
        self.first_episode = first_episode  # a resumed run goes on with the episodes (seeds) after it
        self.sampler = TaskSampler(env.task, env.tasks, env.max_steps, env.max_steps_by_task)
        for task in self.sampler.names:
            check_task(env, task)  # an unknown env or task fails here, not in the middle of a run
        self.gate = StalenessGate(rollout.max_staleness)
        self.metrics = SlotMetrics(actor_id)
        self.engine = make_engine(engine, model_path, seed=seed)
        # With the shards' Ray names, a client follows a shard that Ray restarted elsewhere.
        directory = ShardDirectory(shard_names, namespace) if shard_names else None
        self.clients = [InsertClient(a, window=rollout.insert_window, resolve=directory and directory.resolver(i))
                        for i, a in enumerate(shard_addresses)]
        self.receiver: WeightReceiver | None = None
        self._generation = 0  # of the weight group the receiver is in
        self.adapters: AdapterDirs | None = None
        self.loop: RolloutLoop | None = None
        self.env_backend: EnvBackend | None = None

        self._calls: queue.Queue = queue.Queue()
        self._calls_lock = threading.Lock()
        self._loop_done = False  # after this, engine calls run on the caller's thread
        self._running = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._counts: dict[str, int] = {"episodes": 0, "weight_updates": 0, "adapter_updates": 0,
                                        "gate_closed": 0}
        self._acks: dict[str, int] = {}
        self._gate_open = True
        self._successes: list[bool] = []  # per finished episode, in order (for first/last-100)
        self._outcomes: list[str] = []
        self._task_counts: dict[str, int] = {}  # finished episodes per task
        self._task_recent: dict[str, collections.deque] = {}  # each task's last TASK_WINDOW successes
        self._inserted: list[str] = []    # traj_ids acknowledged as stored by a shard
        self._ready = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, name=f"rollout-{actor_id}", daemon=True)
        self._thread.start()
        self._ready.result(timeout=120)  # env backend and slots up, or raise here

    # ---- Ray-facing control -------------------------------------------------------------
    def start(self) -> None:
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def stop(self) -> dict:
        """Stop the loop, close the env backend, wait for the acks of everything sent. Idempotent."""
        if self._stop.is_set():
            return self.stats()
        self._stop.set()
        self._thread.join(timeout=60)
        self.engine.close()
        for c in self.clients:  # every trajectory sent gets its ack before the sockets close
            c.flush()
            self._collect_acks(c)
            c.close()
        return self.stats()

    def join_weight_group(self, host: str, port: int, rank: int, world_size: int, backend: str,
                          timeout_s: float, generation: int = 0) -> None:
        """Join the learner's weight group (replacing any earlier one). `generation` numbers the
        groups the learner opened: a sync meant for an older one is refused (see _check_group)."""
        group = open_weight_group(host, port, rank, world_size, backend, timeout_s)
        self.receiver, self._generation = WeightReceiver(group), generation

    def update_weights(self, version: int, layout, generation: int = 0) -> int:
        """Join the learner's broadcast of `version` and load it between two engine requests."""
        self._check_group(generation)
        self.gate.announce(version)
        return self._call(self._receive_weights, version, layout)

    def update_adapter(self, version: int, layout, adapter_config: dict, generation: int = 0) -> int:
        """Join the learner's broadcast of a LoRA adapter as `version` (PEFT tensor names,
        `adapter_config` as adapter_config.json) and serve it from the next engine request on."""
        self._check_group(generation)
        self.gate.announce(version)
        return self._call(self._receive_adapter, version, layout, adapter_config)

    def _check_group(self, generation: int) -> None:
        # Ray retries a call that was in flight when this actor's process died on the restarted
        # one; joining the broadcast of a newer group with it would take another call's data.
        if self.receiver is None or generation != self._generation:
            raise RuntimeError(f"{self.actor_id}: a sync for weight group {generation}, but this actor is in "
                               f"{self._generation if self.receiver is not None else 'none'}")

    def load_weights(self, named, version: int) -> int:
        """Load (name, tensor) pairs as `version` between two engine requests (in-process use:
        tests, benchmarks; across processes weights come through update_weights)."""
        self.gate.announce(version)
        return self._call(self._load_weights, named, version)

    # The GPU engine's weights come over vLLM's weight-transfer engine (NCCL), driven by the
    # trainer in four phases; a trainer-side VLLMWeightSyncClient maps its init / start / update
    # / finish onto these. Between start and finish the actor submits no request.
    def transfer_init(self, init_info: dict) -> None:
        self.engine.init_weight_transfer(init_info)

    def transfer_start(self) -> None:
        self._call(self._transfer_start)

    def transfer_update(self, update_info: dict) -> None:
        self.engine.update_weights(update_info)  # blocks while the trainer broadcasts

    def transfer_finish(self, version: int) -> int:
        self.gate.announce(version)
        return self._call(self._transfer_finish, version)

    def transfer_shutdown(self) -> None:
        self.engine.shutdown_weight_transfer()

    def set_learner_version(self, version: int) -> None:
        """The learner's current policy version, for the staleness gate."""
        self.gate.announce(version)

    def greedy(self, text: str, max_tokens: int = 16) -> list[int]:
        """Greedy token ids for an observation text (for tests and evaluation)."""
        return self._call(self._greedy, text, max_tokens)

    def stats(self) -> dict:
        s = dict(self._counts)
        for status, n in list(self._acks.items()):
            s[f"acked_{status}"] = n
        loop = self.loop
        if loop is not None:
            s.update(loop.stats)
            s.update({f"time_{k}_s": round(v, 3) for k, v in loop.times.items()})
            counts = loop.state_counts()
            s.update({f"slots_{k}": counts.get(k, 0) for k in STATES})
            s.update({f"slot_s_{k}": round(v, 3) for k, v in self.metrics.slot_seconds.items()})
        if self.env_backend is not None:
            s.update(self.env_backend.stats())
        for outcome in ("correct", "incorrect", "unknown"):
            s[f"episodes_{outcome}"] = self._outcomes.count(outcome)
        s["episodes_by_task"] = dict(self._task_counts)
        s["success_by_task"] = {t: sum(r) / len(r) for t, r in ((t, tuple(d)) for t, d in list(self._task_recent.items())) if r}
        s.update(actor_id=self.actor_id, instance=self.instance, restarted=self.restarted,
                 policy_version=self.engine.policy_version,
                 learner_version=self.gate.learner_version, staleness_lag=self.gate.lag(),
                 error=repr(self._error) if self._error else None)
        return s

    def sampler_state(self) -> dict:
        """What the task sampler has used (episode counter → seeds), for learner snapshots."""
        started = self.loop.stats["episodes_started"] if self.loop is not None else self.first_episode
        return {"actor_id": self.actor_id, "episodes_started": int(started)}

    def outcomes(self, start: int = 0) -> list[bool]:
        """Success of each finished episode from index `start` on, in finishing order."""
        return self._successes[start:]

    def outcome_labels(self, start: int = 0) -> list[str]:
        """Outcome ("correct" / "incorrect" / "unknown") of each finished episode from `start`."""
        return self._outcomes[start:]

    def acknowledged(self) -> list[str]:
        return list(self._inserted)

    # ---- loop thread ----------------------------------------------------------------------
    def _call(self, fn, *args):
        """Run fn on the loop thread between two engine requests; once the loop has ended,
        nothing else uses the engine, so run it here."""
        if self._error is not None:
            raise RuntimeError(f"rollout loop of {self.actor_id} died: {self._error!r}")
        fut = None
        with self._calls_lock:
            if not self._loop_done:
                fut = concurrent.futures.Future()
                self._calls.put((fn, args, fut))
        if fut is None:
            return fn(*args)
        return fut.result(timeout=self.rollout.call_timeout_s)

    def _drain_calls(self) -> None:
        while True:
            try:
                fn, args, fut = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                fut.set_result(fn(*args))
            except Exception as e:  # noqa: BLE001 - the caller gets any error; the loop goes on
                fut.set_exception(e)

    def _receive(self, version: int, layout):
        if self.receiver is None:
            raise RuntimeError(f"{self.actor_id} has not joined the weight group")
        return self.receiver.receive(layout, version)

    def _receive_weights(self, version: int, layout) -> int:
        if self.receiver is None:
            raise RuntimeError(f"{self.actor_id} has not joined the weight group")
        with self.receiver.stream(layout, version) as named:  # loads bucket k while k+1 arrives
            return self._load_weights(named, version)

    def _receive_adapter(self, version: int, layout, adapter_config: dict) -> int:
        named = self._receive(version, layout)
        if self.adapters is None:
            self.adapters = AdapterDirs(adapter_root(self.actor_id))
        self.engine.load_adapter(str(self.adapters.write(named, version, adapter_config)), version)
        self._counts["adapter_updates"] += 1
        return version

    def _load_weights(self, named, version: int) -> int:
        self.engine.load_weights(named, version)
        self._counts["weight_updates"] += 1
        return version

    def _transfer_start(self) -> None:
        self.engine.start_weight_update()  # the loop drained the engine before this call
        self.loop.hold = True

    def _transfer_finish(self, version: int) -> int:
        self.engine.finish_weight_update(version)
        self.loop.hold = False
        self._counts["weight_updates"] += 1
        return version

    def _greedy(self, text: str, max_tokens: int) -> list[int]:
        ids = self.engine.chat_prompt_ids(text)
        return self.engine.generate([ids], [None], temperature=0.0, max_tokens=max_tokens)[0].token_ids

    def _main(self) -> None:
        env = self.env_cfg
        try:
            self.env_backend = backend = make_env_backend(env)
            slots = [EnvSlot(backend, hang_timeout_s=env.hang_timeout_s, max_failures=env.max_failures)
                     for _ in range(self.rollout.slots)]
            first = self.sampler.names[0]
            for f in [backend.submit(s.open(first)) for s in slots]:
                f.result()
            self.loop = RolloutLoop(self.engine, backend, slots, rollout=self.rollout,
                                    sampler=self.sampler, finish=self._finish, metrics=self.metrics,
                                    seed_key=self._seed_key(), ref_mode=backend.ref_mode)
            self.loop.stats["episodes_started"] = self.first_episode
        except Exception as e:  # noqa: BLE001 - re-raised in the constructor
            if self.env_backend is not None:
                self.env_backend.close()
            self._ready.set_exception(e)
            return
        self._ready.set_result(True)
        try:
            self._run(self.loop)
        except BaseException as e:
            self._error = e
            raise
        finally:
            self.loop.close()
            self.env_backend.close()
            with self._calls_lock:
                self._loop_done = True
                self._drain_calls()  # calls queued before the loop ended still run

    def _seed_key(self) -> str:
        # A restarted process counts its episodes from `first_episode` again: a key of its own
        # keeps it from replaying its predecessor's task seeds (each trajectory records its seed).
        key = f"{self.seed}:{self.actor_id}"
        return f"{key}:{self.instance}" if self.restarted else key

    def _run(self, loop: RolloutLoop) -> None:
        while not self._stop.is_set():
            if not self._calls.empty():
                loop.drain_engine()
                self._drain_calls()
            if not self._running.is_set():
                loop.metrics.observe(loop.state_counts())
                time.sleep(0.01)
                continue
            loop.tick(self._admit)
            for c in self.clients:
                self._collect_acks(c)

    def _admit(self) -> bool:
        """May a new episode start now? (Started, and the staleness gate is open.)"""
        if not self._running.is_set() or self._stop.is_set():
            return False
        is_open = self.gate.admits(self.engine.policy_version)
        if self._gate_open and not is_open:
            self._counts["gate_closed"] += 1
        self._gate_open = is_open
        return is_open

    def _finish(self, episode, info: dict) -> None:
        success = bool(info.get("success"))
        outcome = info.get("outcome") or ("correct" if success else "incorrect")
        reward = self.reward_fn(success=success, outcome=outcome, env_reward=info.get("raw_reward", 0.0))
        traj = episode.finish(actor_id=self.actor_id, env=f"{self.env_cfg.name}/{episode.task}",
                              reward=reward, success=success, outcome=outcome)
        shard = shard_for(route_key(traj.traj_id, traj.group_id), len(self.clients))  # a group stays on one shard
        self.clients[shard].insert(traj)
        self.gate.episode_finished(time.monotonic() - episode.started_at)
        self._counts["episodes"] += 1
        self._successes.append(success)
        self._outcomes.append(outcome)
        self._task_counts[episode.task] = self._task_counts.get(episode.task, 0) + 1
        self._task_recent.setdefault(episode.task, collections.deque(maxlen=TASK_WINDOW)).append(success)

    def _collect_acks(self, client: InsertClient) -> None:
        for traj_id, reply in client.poll():
            status = reply.get("status")
            self._acks[status] = self._acks.get(status, 0) + 1
            if status == "stored":
                self._inserted.append(traj_id)
