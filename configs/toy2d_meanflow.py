"""MeanFlow on a 2-D toy distribution: one-step generation by regressing average velocities.

    flowjax train --config=configs/toy2d_meanflow.py --workdir=/tmp/flowjax_mf_toy

The main job's residual MLP, built as an average-velocity network ``u(x, s, e)`` (it embeds
``s`` and raw ``e - s``), trained with the MeanFlow objective for 8000 steps: (s, e) from two
uniform draws with 75% of the rows at e = s, plain squared error (adaptive weight p = 0, see
the measurements below).
Measured (``experiments/one_step.py``, 20 000 samples, the main job's evaluation noise):
sliced-Wasserstein 0.047 / 0.039 / 0.028 at 1 / 2 / 4 NFE, against 1.12 / 0.50 / 0.26 for
the main job's rectified flow with Euler and 0.014 for its 128-NFE RK4 solve; 8000 steps
took 6.8 minutes here, when the JVP still ran over the whole batch (a MeanFlow step now costs
1.33x a flow-matching step on this small MLP, 1.51x with the whole-batch JVP:
``python benchmarks/meanflow_step.py``).
Sampled with the flow-map sampler at 1, 2 and 4 NFE (``flowmap:k``:
``x <- x + (t_next - t) u(x, t, t_next)``); the reference (last) setting is 4 NFE.
"""

import ml_collections

from flowjax.config_files import sibling

common = sibling(__file__, "common")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = sibling(__file__, "toy2d_rf").get_config(arg)
    # Measured on the checkerboard (1-NFE sliced-Wasserstein): adaptive weight p = 1 (ImageNet's)
    # 0.12 after 2000 steps, 0.18 after 8000 (mode-seeking: samples shrink to the squares'
    # centres); after 4000 steps p = 0.5 0.075, p = 0 (plain squared error) 0.061 with
    # logit-normal(0.4, 1) times and 0.054 with uniform times; 50% e = s rows and
    # logit-normal(0, 1): 0.076.
    # (the logit-normal above: --config.objective.time_sampler=logit_normal,loc=0.4,scale=1)
    common.meanflow_objective(c)
    return c
