"""Particle search on a trained run: the job behind ``flowjax search``.

:func:`load_search_setup` restores a training directory (EMA parameters of the newest
checkpoint), adapts the network into a linear-path velocity and builds the :class:`Proposal`;
:func:`run_search` solves ``num_samples`` independent problems in chunks (a progress bar over
the chunks), and writes ``<label>.npz`` (``samples``, ``rewards``), ``<label>.json`` (settings,
NFE spent per problem, reward statistics; paths relative to the output directory) and
``<label>.png`` (a scatter against held-out data for 2-D runs, an image grid otherwise).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import plotting
from flowjax.search import METHODS, make_proposal, make_reward, search
from flowjax.search.particles import check_reward
from flowjax.search.rewards import check_reward_fits
from flowjax.training import load_run
from flowjax.velocity import make_velocity_fn


def load_search_setup(workdir: str, proposal: str, num_steps: int, *, eta: float = 3.0):
    """``(proposal, experiment, params, step)`` of the run in ``workdir``."""
    _, exp, params, step = load_run(workdir)
    if exp.average_velocity:
        raise ValueError(
            "particle search samples an instantaneous velocity; this run trains an "
            "average-velocity model (MeanFlow / FreeFlow)"
        )
    velocity = make_velocity_fn(exp.apply_fn, num_classes=exp.num_classes)

    def v(x, t, cond):
        return velocity(params, x, t, cond)

    prop = make_proposal(
        v, proposal, num_steps=num_steps, element_shape=exp.data.element_shape, eta=eta
    )
    return prop, exp, params, step


def run_search(
    workdir: str,
    *,
    method: str,
    budget: int,
    reward: str,
    proposal: str = "vp-sde",
    num_steps: int = 10,
    num_samples: int = 16,
    chunk: int = 16,
    label: int | None = None,
    eta: float = 3.0,
    seed: int = 0,
    out_dir: str | None = None,
    method_options: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Everything ``flowjax search`` does; returns the report written to ``<label>.json``."""
    from tqdm import tqdm

    METHODS[method]  # unknown search method 'x'; choose one of [...] (before loading the run)
    if num_samples < 1 or chunk < 1:
        raise ValueError("num_samples and chunk must be >= 1")
    reward_fn = make_reward(reward)
    prop, exp, _, step = load_search_setup(workdir, proposal, num_steps, eta=eta)
    check_reward_fits(reward_fn, getattr(exp.data, "name", None), reward)
    cond_value = None
    if exp.num_classes is not None:
        cond_value = exp.num_classes if label is None else int(label)  # null = unconditional
        if not 0 <= cond_value <= exp.num_classes:
            raise ValueError(f"label must be in 0..{exp.num_classes - 1} (or unset)")
    elif label is not None:
        raise ValueError("--label needs a class-conditional run")
    chunk = min(chunk, num_samples)
    num_chunks = -(-num_samples // chunk)
    key = jax.random.key(seed)
    check_reward(reward_fn, prop, chunk, key)  # shapes on one batch, before the progress bar
    samples, rewards, nfe = [], [], []
    t0 = time.perf_counter()
    for i in tqdm(
        range(num_chunks), desc=f"{method}/{proposal} NFE<={budget}", disable=not progress
    ):
        cond = None if cond_value is None else jnp.full((chunk,), cond_value, jnp.int32)
        res = search(
            method,
            prop,
            reward_fn,
            jax.random.fold_in(key, i),
            budget=budget,
            num_problems=chunk,
            cond=cond,
            **(method_options or {}),
        )
        samples.append(np.asarray(res.samples))
        rewards.append(np.asarray(res.rewards))
        nfe.append(int(res.nfe))
    seconds = time.perf_counter() - t0
    samples = np.concatenate(samples)[:num_samples]
    rewards = np.concatenate(rewards)[:num_samples]
    name = f"{method}_{proposal}_nfe{budget}"
    out_dir = out_dir or os.path.join(workdir, "search")
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, name)
    np.savez(base + ".npz", samples=samples, rewards=rewards)
    title = f"{method}, {proposal}, budget {budget} NFE, reward {reward}"
    if exp.data.kind == "points":
        reference, _ = exp.data.eval_array(2000)
        plotting.scatter_panels(
            reference, {f"{method} ({proposal})": samples}, base + ".png", title=title
        )
    else:
        plotting.image_rows({title: samples[:64]}, base + ".png")
    report = {
        "method": method,
        "method_options": dict(method_options or {}),
        "proposal": proposal,
        "reward": reward,
        "budget": int(budget),
        "nfe_spent_per_sample": max(nfe),
        "num_samples": int(num_samples),
        "num_steps": int(num_steps),
        "eta": float(eta),
        "label": cond_value,
        "checkpoint_step": step,
        "reward_mean": float(np.mean(rewards)),
        "reward_std": float(np.std(rewards)),
        "rewards": [float(r) for r in rewards],
        "seconds": seconds,
        "files": [name + ext for ext in (".npz", ".json", ".png")],
    }
    with open(base + ".json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    report["out_dir"] = out_dir
    return report
