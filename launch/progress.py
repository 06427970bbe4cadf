"""What a run shows while it runs and leaves when it ends: a progress line, W&B, a JSON summary
and the learning curve (launch/curve.py).

Each poll reads every actor's, shard's and learner rank's stats(); the progress line adds the
episodes and tokens per second since the previous poll. W&B gets the run's figures and, for every
component, the same series the component exports as Ray metrics (launch/metrics.py), as
`<component>/<index>/<metric>[/<tag>]`, with wall time (`wall_s`, the default x axis) and the
learner's step (`learner_step`) logged as axes.

Success figures are over finished episodes in the order the launcher collected them from the
actors (per actor in finishing order; across actors, interleaved by poll), so `success_first_100`
is the random constrained policy's rate and `success_last_100` the latest one.
"""

from __future__ import annotations

import json
import os
import time

import ray
from rich.console import Console

from launch.config import WandbConfig
from launch.curve import save_curve
from launch.metrics import Reporter


class ComponentDied(RuntimeError):
    """A component Ray could not keep alive (no restarts left, or none configured: learner ranks)."""


def gather(component: str, refs: list) -> list:
    """ray.get of one call per component instance; a dead one ends the run with its name
    (`learner-1`) and Ray's account of it, which names its node's address."""
    out = []
    for index, ref in enumerate(refs):
        try:
            out.append(ray.get(ref))
        except ray.exceptions.RayActorError as err:
            raise ComponentDied(f"{component}-{index} died: {err}") from None
    return out


class Progress:
    def __init__(self, actors, learners, shards, *, wandb: WandbConfig, run_dir: str, config: dict):
        self.actors, self.learners, self.shards = actors, learners, shards
        self.learner = learners[0]
        self._figures = {  # the driver's twins of each component's metrics reporter (no gauges)
            "actor": [Reporter("actor", i, dict) for i in range(len(actors))],
            "shard": [Reporter("shard", i, dict) for i in range(len(shards))],
            "learner": [Reporter("learner", r, dict) for r in range(len(learners))],
        }
        self._previous: tuple[float, dict] | None = None  # (time, totals) at the last poll
        self.outcomes: list[bool] = []
        self.losses: list[tuple[int, float]] = []  # (learner step, loss) at each poll
        self._cursor = [0] * len(actors)
        self._instances: list[str | None] = [None] * len(actors)
        self.t0 = time.time()
        self.console = Console(highlight=False, soft_wrap=True)  # one line per update, even in a log
        self.wandb = None
        if wandb.enabled:
            import wandb as wandb_sdk

            mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
            self.wandb = wandb_sdk.init(project=wandb.project, dir=run_dir, mode=mode, config=config)
            self.wandb.define_metric("wall_s")
            self.wandb.define_metric("learner_step")
            self.wandb.define_metric("*", step_metric="wall_s")

    def poll(self) -> dict:
        actor_stats = gather("actor", [a.stats.remote() for a in self.actors])
        for i, s in enumerate(actor_stats):
            if s["instance"] != self._instances[i]:  # Ray restarted it: its outcomes count from 0
                self._instances[i], self._cursor[i] = s["instance"], 0
        new = gather("actor", [a.outcomes.remote(c) for a, c in zip(self.actors, self._cursor)])
        for i, chunk in enumerate(new):
            self._cursor[i] += len(chunk)
            self.outcomes.extend(chunk)
        shard_stats = gather("shard", [s.stats.remote() for s in self.shards])
        learner_stats = gather("learner", [learner.stats.remote() for learner in self.learners])
        learner = learner_stats[0]
        errors = [s["error"] for s in actor_stats + learner_stats if s.get("error")]
        if errors:
            raise ComponentDied(f"a component died: {errors}")
        now = time.time()
        components = self._component_figures(now, {"actor": actor_stats, "shard": shard_stats,
                                                   "learner": learner_stats})
        if learner.get("loss") is not None and (not self.losses or self.losses[-1][0] != learner["step"]):
            self.losses.append((learner["step"], float(learner["loss"])))
        last = self.outcomes[-100:]
        first = self.outcomes[:100]
        totals = {"episodes": len(self.outcomes), "tokens": sum(s.get("tokens", 0) for s in actor_stats)}
        rates = self._rates(now, totals)
        return {
            "minutes": (now - self.t0) / 60,
            "wall_s": now - self.t0,
            "episodes_per_s": rates.get("episodes"),
            "tokens_per_s": rates.get("tokens"),
            "episodes": len(self.outcomes),
            "success_first_100": sum(first) / max(len(first), 1),
            "success_last_100": sum(last) / max(len(last), 1),
            "policy_version": min(s["policy_version"] for s in actor_stats),
            "weight_updates": sum(s.get("weight_updates", 0) for s in actor_stats),
            "env_steps": sum(s.get("steps", 0) for s in actor_stats),
            "tokens_generated": sum(s.get("tokens", 0) for s in actor_stats),
            "replay_steps": sum(s["size_steps"] for s in shard_stats),
            "replay_trajectories": sum(s["size_trajectories"] for s in shard_stats),
            "replay_restored": sum(s["restored_trajectories"] for s in shard_stats),
            "learner_step": learner["step"],
            "learner_loss": learner.get("loss"),
            **{f"learner_{k}": learner.get(k) for k in
               ("lr", "grad_norm", "tokens_per_s", "samples_per_s", "staleness", "sync_s", "policy_loss",
                "value_loss", "kl", "entropy", "clip_fraction", "ratio_mean", "ratio_min", "ratio_max",
                "approx_kl", "advantage_mean", "priority_updates", "mfu")},
            "learner_syncs": learner.get("weight_syncs", 0),
            "components": components,
        }

    def _rates(self, now: float, totals: dict) -> dict:
        """Each total's increase per second since the previous poll (none at the first)."""
        previous, self._previous = self._previous, (now, totals)
        if previous is None or now <= previous[0]:
            return {}
        return {k: max(v - previous[1][k], 0) / (now - previous[0]) for k, v in totals.items()}

    def _component_figures(self, now: float, stats: dict[str, list[dict]]) -> dict[str, float]:
        """{"actor/0/episodes_per_s": ..., "shard/0/filtered/success_only": ...} for W&B."""
        out = {}
        for component, readings in stats.items():
            for index, (reporter, reading) in enumerate(zip(self._figures[component], readings)):
                for (name, tag), value in reporter.values(reading, now).items():
                    metric = name.removeprefix(f"flywheel_{component}_")
                    out[f"{component}/{index}/{metric}" + (f"/{tag}" if tag is not None else "")] = value
        return out

    def show(self, fig: dict) -> None:
        loss = "-" if fig["learner_loss"] is None else f"{fig['learner_loss']:.3f}"
        eps, tps = fig["episodes_per_s"] or 0.0, fig["tokens_per_s"] or 0.0
        self.console.print(
            f"[{fig['minutes']:5.1f} min] episodes {fig['episodes']:5d} ({eps:.1f}/s, {tps:.0f} tok/s) | "
            f"success(last 100) {fig['success_last_100']:.2f} | policy v{fig['policy_version']} | replay "
            f"{fig['replay_steps']} steps | learner step {fig['learner_step']} loss {loss}")
        if self.wandb is not None:
            row = {k: v for k, v in fig.items() if v is not None and k != "components"}
            self.wandb.log({**row, **fig["components"]})

    def summary(self, fig: dict, path: str) -> None:
        keys = ("episodes", "success_first_100", "success_last_100", "weight_updates", "policy_version",
                "learner_step", "replay_steps", "replay_trajectories", "replay_restored", "env_steps",
                "tokens_generated", "minutes")
        out = {k: (round(fig[k], 4) if isinstance(fig[k], float) else fig[k]) for k in keys}
        with open(path, "w") as f:
            json.dump({**out, "outcomes": self.outcomes, "losses": self.losses}, f)
        save_curve(os.path.join(os.path.dirname(path), "curve.png"), self.outcomes, self.losses)
        if self.wandb is not None:
            self.wandb.summary.update(out)
            self.wandb.finish()
        self.console.print(f"summary: {path}")
        print(json.dumps(out), flush=True)
