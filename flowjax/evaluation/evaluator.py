"""In-training evaluation: sample with given parameters under several (solver, NFE, grid)
settings and score the samples against held-out data.

``config.eval.samplers`` lists ``"solver:nfe[:grid]"`` strings, e.g. ``("euler:1", "euler:4",
"dpm++2m:8:logsnr", "heun:8:shifted,alpha=3", "rk4:128")``; the grid defaults to uniform (any
spec of :func:`flowjax.time.grids.grid_from_spec`, or ``learned``; ``bespoke-unipc2:4`` is a
learned sampler; both are read from ``<workdir>/learned_schedules.json``, written by
``flowjax calibrate``); the last one is the *reference* setting (a
converged ODE solve). The untrained-model baseline is scored with the cheapest setting (fewest
NFE; the networks start with a zero output layer, so every solver returns the noise itself).
Scores: the metrics of ``config.eval.metrics``, registered in
:mod:`flowjax.evaluation.metrics` (default: those that apply to the data kind and whose
inputs are configured: sliced-Wasserstein ``sw``; MMD and energy distance for points;
Inception ``fid`` / ``is`` with ``eval.inception_weights``; the feature metric the data source
declares, ``fd`` for the bundled digits). The evaluator names no metric: each declares what it
needs (:class:`flowjax.types.Metric`). Metric names are ``<metric>_<solver>_nfe<k>``
(``..._nfe<k>_<grid>`` for a non-uniform grid). Samples come from a fixed noise batch (and
fixed labels), so numbers at different steps are comparable.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import console, plotting, solvers
from flowjax import data as data_lib
from flowjax.evaluation import fid
from flowjax.evaluation.metrics import MetricContext, build_metrics, select_metrics
from flowjax.evaluation.settings import eval_settings
from flowjax.parallel import multihost
from flowjax.solvers.learned import bespoke
from flowjax.solvers.spec import (
    eval_spec_label,
    objective_keywords,
    parse_eval_spec,
    sampler_keywords,
)
from flowjax.time import grids
from flowjax.velocity import make_velocity_fn


def to_pixels(x, vae=None, *, batch_size: int = 64) -> np.ndarray:
    """Samples ``x`` (latents decoded by ``vae`` in batches, if given) as the pixels of an image
    file: clipped to ``[-1, 1]`` and quantised to the 256 ``uint8`` levels
    (:func:`flowjax.evaluation.fid.quantize_images`), as FID / IS tools score images."""
    if vae is not None:
        x = np.concatenate(
            [np.asarray(vae.decode(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
        )
    return fid.quantize_images(x)


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
        objective: Any = None,
    ):
        settings = eval_settings(config)
        metric_names = select_metrics(settings.metrics, data.kind)  # names checked before work
        self.objective = objective
        self.workdir = workdir
        self.data = data
        self.kind = data.kind
        n = settings.num_samples
        key = jax.random.PRNGKey(int(config.seed) + 10_000)
        k_noise, k_label, self._k_metric = jax.random.split(key, 3)
        noise_shape = (
            tuple(data.element_shape)
            if objective is None
            else tuple(objective.noise_shape(tuple(data.element_shape)))
        )
        self.x0 = jax.random.normal(k_noise, (n, *noise_shape), jnp.float32)
        channels = settings.guidance_channels
        if channels is not None and channels[-1] >= noise_shape[-1]:
            raise ValueError(
                f"eval.guidance_channels={list(channels)} names a channel beyond the "
                f"{noise_shape[-1]} channels of the samples; use indices below {noise_shape[-1]}"
            )
        self.labels = (
            jax.random.randint(k_label, (n,), 0, num_classes) if num_classes is not None else None
        )
        # Sources without examples (a run whose data cannot be rebuilt) give samples, no scores.
        has_data = data_lib.has_eval_data(data)
        self.reference = data.eval_array(n)[0] if has_data else None
        self.velocity = make_velocity_fn(
            apply_fn,
            num_classes=num_classes,
            cfg_scale=settings.cfg_scale,
            cfg_interval=settings.cfg_interval,
            cfg_channels=settings.guidance_channels,
            average_velocity=average_velocity,
        )
        parsed = [parse_eval_spec(spec) for spec in settings.samplers]
        if not parsed:
            raise ValueError("config.eval.samplers is empty; list at least one 'solver:nfe'")
        self.samplers = {}
        self.network_calls: dict[str, dict[str, int]] = {}
        labels = [self.add_spec(pieces, options) for pieces, options in parsed]
        costs = [sum(piece[1] for piece in p[0]) for p in parsed]
        self.reference_label = labels[-1]
        self.baseline_label = labels[int(np.argmin(costs))]
        self._setup_pixels(settings)
        # Each metric built once, with what it may read about the run (data sets' feature
        # networks are cached under the workdir unless eval.feature_cache_dir says otherwise).
        context = MetricContext(
            settings=settings,
            kind=self.kind,
            data=data,
            reference=self.reference,
            reference_pixels=self.reference_pixels,
            key=self._k_metric,
            cache_dir=settings.feature_cache_dir or os.path.join(workdir, "eval_cache"),
            velocity=self.velocity,
            noise=self.x0,
            labels=self.labels,
        )
        self.metrics = build_metrics(metric_names, context, explicit=settings.metrics is not None)

    def _setup_pixels(self, settings) -> None:
        """Decoded pixels, when ``eval.vae_weights`` is set: samples of a latent model (and the
        held-out latents) are decoded by the VAE before pixel metrics and plotting."""
        self._vae = self._reference_pixels = None
        if settings.vae_weights:
            from flowjax.models.vae import AutoencoderKL

            self._vae = AutoencoderKL.from_file(os.path.expanduser(settings.vae_weights))

    def pixels(self, x: np.ndarray) -> np.ndarray:
        """:func:`to_pixels` of ``x`` with the configured VAE, if any."""
        return to_pixels(x, self._vae)

    def reference_pixels(self) -> np.ndarray | None:
        """:meth:`pixels` of the held-out data (computed once), or ``None`` without any."""
        if self._reference_pixels is None and self.reference is not None:
            self._reference_pixels = self.pixels(self.reference)
        return self._reference_pixels

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
            objective=exp.objective,
        )

    def add_sampler(self, label: str, solver: solvers.Solver, grid) -> None:
        """Add a (solver, grid) setting scored under ``label`` (e.g. a BOSS grid)."""
        self.samplers[label] = solvers.make_sampler(solver, self.velocity, grid)
        self.network_calls[label] = {"full": solver.nfe(len(grid) - 1)}

    def add_spec(self, pieces: list[tuple[str, int, str]], options: dict[str, Any]) -> str:
        """Add the setting of :func:`flowjax.solvers.spec.parse_eval_spec`'s
        ``(pieces, options)``; returns its label.

        The options are checked against the objective's declaration
        (``objective.sampler_options``, ``objective.segmented_sampler``) and become keywords of
        its own sampler (``objective.make_sampler``), used when it has one: with one piece it
        gets ``(solver, nfe, grid)``, with several (one per segment) tuples of them. Otherwise
        the standard sampler of the one piece, or a learned one stored by flowjax.calibrate.
        """
        objective = self.objective
        if objective is None:
            declared: dict = {}
            keywords = sampler_keywords(
                pieces, options, declared, segmented=False, owner="an evaluator without objective"
            )
        else:
            declared = objective.sampler_options
            keywords = objective_keywords(objective, pieces, options)
        label = eval_spec_label(pieces, options, order=declared)
        learned = any(bespoke.is_learned_setting(name, grid) for name, _, grid in pieces)
        if learned and (len(pieces) > 1 or options):
            raise ValueError(
                f"sampler {label!r}: a learned setting (stored by flowjax.calibrate) is one "
                "'solver:nfe[:grid]' without options"
            )
        own = None
        if objective is not None and not learned:
            made = [solvers.make_solver(name) for name, _, _ in pieces]
            if len(pieces) == 1:
                args = (made[0], pieces[0][1], pieces[0][2])
            else:
                args = (tuple(made), tuple(p[1] for p in pieces), tuple(p[2] for p in pieces))
            own = objective.make_sampler(self.velocity, *args, **keywords)
        if own is not None:
            self.samplers[label] = own
            self.network_calls[label] = dict(
                getattr(own, "network_calls", {"full": sum(p[1] for p in pieces)})
            )
            return label
        if len(pieces) > 1 or keywords:
            raise ValueError(
                f"sampler {label!r}: the objective declares options or segments its own "
                "sampler does not build (make_sampler returned None)"
            )
        name, nfe, grid_spec = pieces[0]
        if learned:  # stored by flowjax.calibrate
            run, _ = bespoke.stored_sampler(self.workdir, name, nfe, self.velocity)
            self.samplers[label] = run
            self.network_calls[label] = {"full": int(nfe)}
            return label
        solver = solvers.make_solver(name)
        grid = grids.grid_from_spec(grid_spec, solver.num_steps_for_nfe(nfe))
        self.add_sampler(label, solver, grid)
        return label

    def sample(self, params, labels: list[str] | None = None) -> dict[str, np.ndarray]:
        out = {}
        for label in labels or list(self.samplers):
            run = self.samplers[label]
            out[label] = multihost.to_host(run(params, self.x0, self.labels))
        return out

    def score(self, samples: np.ndarray, label: str) -> dict[str, float]:
        """Every metric of one setting's ``samples``, named ``<metric>_<label>``; each metric
        gets what it declares (pixels, labels, the held-out data); metrics that need held-out
        data are skipped without it."""
        metrics: dict[str, float] = {}
        pixels = None
        for _, metric in self.metrics:
            if metric.needs_velocity or (metric.needs_reference and self.reference is None):
                continue
            x, reference = samples, self.reference
            if metric.needs_pixels:
                pixels = self.pixels(samples) if pixels is None else pixels
                x, reference = pixels, self.reference_pixels() if metric.needs_reference else None
            needs = {"labels": self.labels} if metric.needs_labels else {}
            for name, value in metric.score(x, reference, **needs).items():
                metrics[f"{name}_{label}"] = value
        return metrics

    def score_flow(self, params) -> dict[str, float]:
        """The metrics of the model's flow itself (``needs_velocity``), under their own names."""
        metrics: dict[str, float] = {}
        for _, metric in self.metrics:
            if metric.needs_velocity:
                metrics.update(metric.score(None, self.reference, params=params))
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
        metrics.update(self.score_flow(params))
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
