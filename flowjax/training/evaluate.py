"""In-training evaluation: sample with given parameters under several (solver, NFE, grid)
settings and score the samples against held-out data.

``config.eval.samplers`` lists ``"solver:nfe[:grid]"`` strings, e.g. ``("euler:1", "euler:4",
"dpm++2m:8:logsnr", "heun:8:shifted,alpha=3", "rk4:128")``; the grid defaults to uniform (any
spec of :func:`flowjax.time.grids.grid_from_spec`, or ``learned``; ``bespoke-unipc2:4`` is a
learned sampler; both are read from ``<workdir>/learned_schedules.json``, written by
``python -m flowjax.calibrate``); the last one is the *reference* setting (a
converged ODE solve). The untrained-model baseline is scored with the cheapest setting (fewest
NFE; the networks start with a zero output layer, so every solver returns the noise itself).
Scores: for low-dimensional data, sliced-Wasserstein (``sw``), MMD and energy distance; for
images, the pixel-space sliced-Wasserstein and the feature metric the data source declares,
if any (:func:`flowjax.data.feature_metric`; the bundled digits declare ``fd``, the Fréchet
distance on features of a digits classifier). Metric names are ``<metric>_<solver>_nfe<k>``
(``..._nfe<k>_<grid>`` for a non-uniform grid). Samples come from a fixed noise batch (and
fixed labels), so numbers at different steps are comparable.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import console, evaluation, plotting, solvers
from flowjax import data as data_lib
from flowjax.objectives import guidance
from flowjax.parallel import multihost
from flowjax.solvers import bespoke
from flowjax.time import grids


def make_velocity_fn(
    apply_fn,
    *,
    num_classes: int | None,
    cfg_scale: float = 1.0,
    cfg_interval=None,
    average_velocity: bool = False,
):
    """``v(params, x, t, cond)`` of the network, with classifier-free guidance if asked.

    For an average-velocity network (``average_velocity``) it is
    ``u(params, x, t, cond, t_end)``, for the ``flowmap`` solver. The function is tagged with
    its kind, so a solver of the other kind is refused with a clear message.
    """

    def velocity(params, x, t, cond, *t_end):
        def v(x_, t_, c_, *e_):
            return apply_fn(params, x_, t_, c_, **({"t_end": e_[0]} if e_ else {}))

        if num_classes is not None and cfg_scale != 1.0:
            v = guidance.cfg_velocity(v, cfg_scale, num_classes, cfg_interval)
        return v(x, t, cond, *t_end)

    tag = solvers.average_velocity if average_velocity else solvers.instantaneous_velocity
    return tag(velocity)


def parse_sampler_spec(spec: str) -> tuple[str, int, str]:
    """``"heun:8"`` -> ``("heun", 8, "uniform")``, ``"dpm++2m:8:logsnr"`` ->
    ``("dpm++2m", 8, "logsnr")``, with a clear error for anything else; the grid part is a
    :func:`flowjax.time.grids.parse_grid_spec` spec (``"heun:8:shifted,alpha=3"``)."""
    name, sep, rest = str(spec).partition(":")
    nfe, _, grid = rest.partition(":")
    if not sep or not nfe.strip().isdigit() or not name.strip():
        raise ValueError(
            f"eval sampler {spec!r} must look like 'solver:nfe' or 'solver:nfe:grid', e.g. "
            "'euler:4' or 'dpm++2m:8:logsnr'"
        )
    grid = grid.strip() or "uniform"
    grids.parse_grid_spec(grid)  # a grid part in the name,k=v form (or times), checked now
    return name.strip(), int(nfe), grid


def sampler_label(name: str, nfe: int, grid: str = "uniform") -> str:
    """Metric label of a sampler setting: ``euler_nfe4``, ``dpm++2m_nfe8_logsnr``."""
    label = f"{name}_nfe{nfe}"
    return label if grid == "uniform" else f"{label}_{grid.replace(',', '_').replace('=', '')}"


class Evaluator:
    """``evaluator(params) -> (metrics, samples)``; ``samples`` maps a label to an array."""

    def __init__(
        self,
        config: Any,
        data: Any,
        apply_fn,
        *,
        num_classes: int | None,
        workdir: str,
        average_velocity: bool = False,
    ):
        ecfg = config.eval
        self.data = data
        self.kind = data.kind
        n = int(ecfg.num_samples)
        self.num_kernel_samples = int(ecfg.get("num_kernel_samples", 5000))
        key = jax.random.PRNGKey(int(config.seed) + 10_000)
        k_noise, k_label, self._k_metric = jax.random.split(key, 3)
        self.x0 = jax.random.normal(k_noise, (n, *data.element_shape), jnp.float32)
        self.labels = (
            jax.random.randint(k_label, (n,), 0, num_classes) if num_classes is not None else None
        )
        # Sources without examples (a run whose data cannot be rebuilt) give samples, no scores.
        has_data = data_lib.has_eval_data(data)
        self.reference = data.eval_array(n)[0] if has_data else None
        self.velocity = make_velocity_fn(
            apply_fn,
            num_classes=num_classes,
            cfg_scale=float(ecfg.get("cfg_scale", 1.0)),
            cfg_interval=ecfg.get("cfg_interval", None),
            average_velocity=average_velocity,
        )
        specs = [parse_sampler_spec(s) for s in ecfg.samplers]
        if not specs:
            raise ValueError("config.eval.samplers is empty; list at least one 'solver:nfe'")
        self.samplers = {}
        for name, nfe, grid_spec in specs:
            if bespoke.is_learned_setting(name, grid_spec):  # stored by flowjax.calibrate
                run, _ = bespoke.stored_sampler(workdir, name, nfe, self.velocity)
                self.samplers[sampler_label(name, nfe, grid_spec)] = run
                continue
            solver = solvers.make_solver(name)
            grid = grids.grid_from_spec(grid_spec, solver.num_steps_for_nfe(nfe))
            self.add_sampler(sampler_label(name, nfe, grid_spec), solver, grid)
        self.reference_label = sampler_label(*specs[-1])
        self.baseline_label = sampler_label(*min(specs, key=lambda spec: spec[1]))
        self._setup_pixels(ecfg, has_data)
        # A distance on learned features, if the data source declares one (e.g. the digits
        # classifier's Fréchet distance `fd` for sklearn_digits); cached under the workdir.
        cache = ecfg.get("feature_cache_dir", None) or os.path.join(workdir, "eval_cache")
        self.feature_metric = data_lib.feature_metric(data, cache)

    def _setup_pixels(self, ecfg, has_data: bool) -> None:
        """Decoded pixels and Inception FID, when ``eval.vae_weights`` / ``eval.inception_weights``
        are set: samples of a latent model (and the held-out latents) are decoded by the VAE
        before scoring and plotting; FID is against ``eval.fid_stats`` (an ``.npz`` with ``mu``,
        ``sigma``) or, without it, against the held-out data's own Inception statistics."""
        self._vae = self._inception = self._fid_ref = None
        if ecfg.get("vae_weights", None):
            from flowjax.models.vae import AutoencoderKL

            self._vae = AutoencoderKL.from_file(os.path.expanduser(ecfg.vae_weights))
        if ecfg.get("inception_weights", None):
            from flowjax.evaluation import fid
            from flowjax.models.inception import InceptionV3

            self._inception = InceptionV3.from_file(os.path.expanduser(ecfg.inception_weights))
            if ecfg.get("fid_stats", None):
                dim = self._inception.feature_dim
                self._fid_ref = fid.load_stats(os.path.expanduser(ecfg.fid_stats), dim)
            elif has_data:
                feats, _ = fid.inception_features(self._inception, self.pixels(self.reference))
                self._fid_ref = fid.feature_statistics(feats)

    def pixels(self, x: np.ndarray) -> np.ndarray:
        """``x`` as images in ``[-1, 1]``: decoded by the VAE if one is configured."""
        if self._vae is None:
            return x
        out = [
            np.asarray(self._vae.decode(x[i : i + 64]), np.float32) for i in range(0, len(x), 64)
        ]
        return np.clip(np.concatenate(out), -1.0, 1.0)

    @classmethod
    def for_experiment(cls, config: Any, exp: Any, workdir: str) -> Evaluator:
        """The evaluator of an :class:`~flowjax.training.Experiment` (its data, network,
        classes and velocity kind) with the ``eval`` settings of ``config``."""
        return cls(
            config,
            exp.data,
            exp.apply_fn,
            num_classes=exp.num_classes,
            workdir=workdir,
            average_velocity=exp.average_velocity,
        )

    def add_sampler(self, label: str, solver: solvers.Solver, grid) -> None:
        """Add a (solver, grid) setting scored under ``label`` (e.g. a BOSS grid)."""
        self.samplers[label] = solvers.make_sampler(solver, self.velocity, grid)

    def sample(self, params, labels: list[str] | None = None) -> dict[str, np.ndarray]:
        out = {}
        for label in labels or list(self.samplers):
            run = self.samplers[label]
            out[label] = multihost.to_host(run(params, self.x0, self.labels))
        return out

    def score(self, samples: np.ndarray, label: str) -> dict[str, float]:
        if self.reference is None:
            return {}
        x = jnp.asarray(samples.reshape(samples.shape[0], -1))
        y = jnp.asarray(self.reference.reshape(self.reference.shape[0], -1))
        metrics = {f"sw_{label}": float(evaluation.sliced_wasserstein(x, y, self._k_metric))}
        if self.kind == "points":
            # The kernel distances cost O(n^2): they use the first `num_kernel_samples` points.
            k = self.num_kernel_samples
            metrics[f"mmd_{label}"] = float(evaluation.mmd(x[:k], y[:k]))
            metrics[f"energy_{label}"] = float(evaluation.energy_distance(x[:k], y[:k]))
        if self._inception is not None and self._fid_ref is not None:
            from flowjax.evaluation import fid

            metrics[f"fid_{label}"] = fid.fid_to_stats(
                self._inception, self.pixels(samples), *self._fid_ref
            )
        if self.feature_metric is not None:
            metrics[f"{self.feature_metric.name}_{label}"] = float(self.feature_metric(samples))
        return metrics

    def __call__(
        self, params, labels: list[str] | None = None, *, progress: bool | None = False, desc="eval"
    ):
        """``(metrics, samples)`` of every sampler setting (or those in ``labels``), each
        sampled then scored; ``progress`` shows a bar over the settings (``None``: when stderr
        is a terminal)."""
        labels = labels or list(self.samplers)
        bar = console.progress_bar(len(labels), desc=desc, unit="setting", enabled=progress)
        samples: dict[str, np.ndarray] = {}
        metrics: dict[str, float] = {}
        with bar:
            for label in labels:
                bar.set_postfix_str(label, refresh=False)
                samples.update(self.sample(params, [label]))
                metrics.update(self.score(samples[label], label))
                bar.update(1)
        return metrics, samples

    def plot(self, samples: dict[str, np.ndarray], path: str, title: str | None = None) -> str:
        names = {label: label.replace("_nfe", ", NFE=") for label in samples}
        if self.kind == "points":
            panels = {names[k]: s for k, s in samples.items()}
            return plotting.scatter_panels(self.reference, panels, path, title=title)
        rows = (
            {} if self.reference is None else {"data (held out)": self.pixels(self.reference[:64])}
        )
        rows.update({names[k]: self.pixels(s[:64]) for k, s in samples.items()})
        return plotting.image_rows(rows, path, title=title)
