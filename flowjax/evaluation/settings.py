"""The ``eval`` section of a config, declared once: :class:`EvalSettings`.

Every key the evaluator reads is a field here with its default; :func:`eval_settings` builds
it from ``config.eval`` (:func:`flowjax.spec.from_section`: a key that is not a field is an
error naming the valid ones). Example::

    settings = eval_settings(config)
    settings.num_kernel_samples  # 5000 unless the config sets it
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flowjax.spec import from_section, interval
from flowjax.velocity import validate_channels

__all__ = ["EvalSettings", "eval_settings"]


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):  # one name given as text: ("sw",), not ("s", "w")
        return (value,)
    return tuple(str(v) for v in value)


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """What the in-training evaluation samples and scores (``config.eval``).

    Attributes:
      num_samples: samples drawn per sampler setting, from one fixed noise batch (required).
      samplers: ``"solver:nfe[:grid][@options]"`` settings; the last one is the reference
        (a converged solve), the cheapest one scores the untrained network.
      metrics: registered metric names (:data:`flowjax.evaluation.METRICS`) to score with;
        ``None``: every default metric that applies to the data kind and whose inputs are
        configured (``sw``; ``mmd`` and ``energy`` for points; ``fid`` / ``is`` with
        ``inception_weights``; the data set's feature metric, ``fd`` for the bundled digits).
      num_kernel_samples: points the O(n^2) kernel metrics (MMD, energy) use, the first ones.
      cfg_scale, cfg_interval: classifier-free guidance of the sampled velocity.
      guidance_channels: guide only these channels (the last axis; ``"0,1,2"`` or a list), the
        others take the conditional velocity, as FiT and Lumina-Next sample latents; None:
        every channel.
      feature_cache_dir: where a data set's feature network is cached (default
        ``<workdir>/eval_cache``).
      vae_weights: a VAE ``.npz``: latent samples are decoded to pixels before pixel metrics
        and plots.
      inception_weights: the FID Inception ``.npz``: enables ``fid`` / ``is``.
      fid_stats: reference ``(mu, sigma)`` ``.npz`` of FID; default: the held-out data's.
      straightness_steps: Euler steps of the trajectories the ``straightness`` metric measures.
    """

    num_samples: int
    samplers: tuple[str, ...] = ()
    metrics: tuple[str, ...] | None = None
    num_kernel_samples: int = 5000
    cfg_scale: float = 1.0
    cfg_interval: tuple[float, float] | None = None
    guidance_channels: tuple[int, ...] | None = None
    feature_cache_dir: str | None = None
    vae_weights: str | None = None
    inception_weights: str | None = None
    fid_stats: str | None = None
    straightness_steps: int = 64


def eval_settings(config: Any) -> EvalSettings:
    """:class:`EvalSettings` of ``config.eval``; a clear error for an unknown or missing key."""
    section = dict(config.get("eval", None) or {})
    if section.get("num_samples") is None:
        raise ValueError(
            "config.eval.num_samples is not set; give the number of samples each evaluation "
            "draws, e.g. --config.eval.num_samples=1000"
        )
    convert = {
        "samplers": _names,
        "metrics": lambda v: None if v is None else _names(v),
        "cfg_interval": interval,
        "guidance_channels": validate_channels,
    }
    return from_section(EvalSettings, section, where="config.eval", convert=convert)
