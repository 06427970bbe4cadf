"""RolloutActor: one inference engine, several browser env slots, trajectories streamed to replay.

All engine and browser work happens on one loop thread (Playwright's sync API is bound to the
thread that started it, and the engine is not thread safe). Ray method calls that need the
engine — new weights, a greedy probe — are queued to that thread and run between two batched
generate calls, so weights change only between requests and the world never stops.

Each loop iteration: the observations of all slots go to the engine as one batch (each with its
own choice constraint over the page's valid actions), each slot then steps its page; a finished
episode becomes a Trajectory, is scored by the configured reward and is inserted into the shard
chosen by its traj_id.

NOT guaranteed: an episode whose browser crashed is dropped, not retried (a later issue turns it
into an `unknown` outcome); slots step their pages one after another, not concurrently.
"""

from __future__ import annotations

import collections
import concurrent.futures
import queue
import threading
import time
import zlib

from actors.engine import VLLMEngine
from actors.episode import Episode, render_prompt
from buffer.client import InsertClient
from learner.weight_group import open_weight_group
from learner.weight_receiver import WeightReceiver
from rewards import make_reward


class RolloutActor:
    def __init__(self, actor_id: str, model_path: str, shard_addresses: list[str], *,
                 engine: dict, env: dict, rollout: dict, reward: dict, seed: int = 0):
        self.actor_id = actor_id
        self.rollout = dict(rollout)
        self.env_cfg = dict(env)
        self.reward_fn = make_reward(reward["name"], **reward.get("params", {}))
        self.seed = seed
        self.engine = VLLMEngine(model_path, seed=seed, **engine)
        self.clients = [InsertClient(a, window=self.rollout["insert_window"]) for a in shard_addresses]
        self.receiver: WeightReceiver | None = None

        self._calls: queue.Queue = queue.Queue()
        self._calls_lock = threading.Lock()
        self._loop_done = False  # after this, engine calls run on the caller's thread
        self._running = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._stats = collections.Counter()
        self._successes: list[bool] = []  # per finished episode, in order (for first/last-100)
        self._inserted: list[str] = []    # traj_ids acknowledged as stored by a shard
        self._ready = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, name=f"rollout-{actor_id}", daemon=True)
        self._thread.start()
        self._ready.result(timeout=120)  # browser and slots up, or raise here

    # ---- Ray-facing control -------------------------------------------------------------
    def start(self) -> None:
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(timeout=60)
        for c in self.clients:  # every trajectory sent gets its ack before the sockets close
            c.flush()
            self._collect_acks(c)
            c.close()
        return self.stats()

    def join_weight_group(self, host: str, port: int, rank: int, world_size: int, backend: str,
                          timeout_s: float) -> None:
        group = open_weight_group(host, port, rank, world_size, backend, timeout_s)
        self.receiver = WeightReceiver(group)

    def update_weights(self, version: int, layout) -> int:
        """Join the learner's broadcast of `version` and load it between two engine requests."""
        return self._call(self._receive_weights, version, layout)

    def greedy(self, text: str, max_tokens: int = 16) -> list[int]:
        """Greedy token ids for an observation text (for tests and evaluation)."""
        return self._call(self._greedy, text, max_tokens)

    def stats(self) -> dict:
        s = dict(self._stats)
        s.update(actor_id=self.actor_id, policy_version=self.engine.policy_version,
                 error=repr(self._error) if self._error else None)
        return s

    def outcomes(self, start: int = 0) -> list[bool]:
        """Success of each finished episode from index `start` on, in finishing order."""
        return self._successes[start:]

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
        return fut.result(timeout=self.rollout["call_timeout_s"])

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

    def _receive_weights(self, version: int, layout) -> int:
        if self.receiver is None:
            raise RuntimeError(f"{self.actor_id} has not joined the weight group")
        named = self.receiver.receive(layout, version)
        self.engine.load_weights(named, version)
        self._stats["weight_updates"] += 1
        return version

    def _greedy(self, text: str, max_tokens: int) -> list[int]:
        ids = self.engine.chat_prompt_ids(text)
        return self.engine.generate([ids], [None], temperature=0.0, max_tokens=max_tokens)[0].token_ids

    def _main(self) -> None:
        from actors.env.browser import launch_browser
        from actors.env.miniwob import MiniWoBEnv

        try:
            browser = launch_browser(self.env_cfg["chromium"])
            envs = [MiniWoBEnv(browser, task=self.env_cfg["task"], ref_mode=self.env_cfg["ref_mode"],
                               max_steps=self.env_cfg["max_steps"])
                    for _ in range(self.rollout["slots"])]
        except Exception as e:  # noqa: BLE001 - re-raised in the constructor
            self._ready.set_exception(e)
            return
        self._ready.set_result(True)
        try:
            self._loop(envs)
        except BaseException as e:
            self._error = e
            raise
        finally:
            for env in envs:
                env.close()
            browser.close()
            with self._calls_lock:
                self._loop_done = True
                self._drain_calls()  # calls queued before the loop ended still run

    def _new_episode(self, env, slot: int):
        n = self._stats["episodes_started"]
        self._stats["episodes_started"] += 1
        seed = zlib.crc32(f"{self.seed}:{self.actor_id}:{n}".encode())
        obs = env.reset(seed)
        return Episode(task=self.env_cfg["task"], seed=seed,
                       policy_version=self.engine.policy_version), obs

    def _loop(self, envs) -> None:
        slots = [None] * len(envs)
        while not self._stop.is_set():
            self._drain_calls()
            if not self._running.is_set():
                time.sleep(0.01)
                continue
            for i, env in enumerate(envs):
                if slots[i] is None:
                    slots[i] = self._new_episode(env, i)
            prompts, choices = [], []
            for episode, obs in slots:
                text = render_prompt(obs.text, episode.actions, self.rollout["history"])
                prompts.append(self.engine.chat_prompt_ids(text))
                choices.append(obs.allowed_actions if self.rollout["constrained"] and obs.allowed_actions else None)
            gens = self.engine.generate(prompts, choices, temperature=self.rollout["temperature"],
                                        max_tokens=self.rollout["max_tokens"])
            for i, (env, gen) in enumerate(zip(envs, gens)):
                episode, obs = slots[i]
                next_obs, reward, done, info = env.step(gen.text)
                self._stats["steps"] += 1
                self._stats["tokens"] += len(gen.token_ids)
                episode.add(observation=obs.text, prompt_ids=prompts[i], response_ids=gen.token_ids,
                            logprobs=gen.logprobs, action=gen.text, allowed_actions=choices[i] or [],
                            reward=reward, done=done, policy_version=self.engine.policy_version)
                slots[i] = (episode, next_obs)
                if done:
                    self._finish(episode, info)
                    slots[i] = None
            for c in self.clients:
                self._collect_acks(c)

    def _finish(self, episode: Episode, info: dict) -> None:
        success = bool(info.get("success"))
        outcome = info.get("outcome") or ("correct" if success else "incorrect")
        reward = self.reward_fn(success=success, outcome=outcome, env_reward=info.get("raw_reward", 0.0))
        traj = episode.finish(actor_id=self.actor_id, env=f"miniwob/{episode.task}",
                              reward=reward, success=success, outcome=outcome)
        shard = zlib.crc32(traj.traj_id.encode()) % len(self.clients)
        self.clients[shard].insert(traj)
        self._stats["episodes"] += 1
        self._successes.append(success)

    def _collect_acks(self, client: InsertClient) -> None:
        for traj_id, reply in client.poll():
            status = reply.get("status")
            self._stats[f"acked_{status}"] += 1
            if status == "stored":
                self._inserted.append(traj_id)
