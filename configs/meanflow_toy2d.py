"""MeanFlow on a 2-D toy distribution: one-step generation by regressing average velocities.

    python -m flowjax.main --config=configs/meanflow_toy2d.py --workdir=/tmp/flowjax_mf_toy

The main job's residual MLP, built as an average-velocity network ``u(x, s, e)`` (it embeds
``s`` and ``e - s``), trained with the MeanFlow objective: (s, e) from two logit-normal draws,
RESULT_PLACEHOLDER
Sampled with the flow-map sampler at 1, 2 and 4 NFE (``flowmap:k``:
``x <- x + (t_next - t) u(x, t, t_next)``); the reference (last) setting is 4 NFE.
"""

import ml_collections

from flowjax.config_files import sibling


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = sibling(__file__, "toy2d_rf").get_config(arg)
    c.model.time_scale = 1.0  # raw t: the JVP differentiates the network in time
    c.objective.name = "meanflow"
    c.objective.time_sampler = "logit_normal"
    c.objective.logit_normal = dict(loc=0.4, scale=1.0)
    c.objective.meanflow = dict(
        equal_fraction=0.75,
        adaptive_p=1.0,
        adaptive_c=0.01,
        omega=1.0,
        kappa=0.0,
        guidance_interval=None,
    )
    c.objective.dispersive = dict(
        weight=0.0,
        layers=("feature_1",),
        variant="infonce_l2",
        tau=1.0,
        normalize="none",
        margin=1.0,
    )
    c.eval.samplers = ("flowmap:1", "flowmap:2", "flowmap:4")
    return c
