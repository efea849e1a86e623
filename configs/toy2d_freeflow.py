"""FreeFlow on the 2-D toy: a one-step flow map distilled from the main job's teacher, without data.

    flowjax train --config=configs/toy2d_rf.py --workdir=/tmp/toy          # the teacher
    flowjax train --config=configs/toy2d_freeflow.py --workdir=/tmp/toy_ff \\
        --config.init.workdir=/tmp/toy

Student ``f(z, delta) = z + delta F(z, delta)`` (the teacher's MLP with an extra embedding of
``delta``, started as the teacher's velocity at t = 0), trained only from prior samples with
the prediction objective (75% of each batch) and the correction objective with an online
fake velocity network (25%); the frozen teacher is queried at the student's own points. No
data point is read (the toy source only fixes shapes and the evaluation's held-out set).
Sampled in one step, ``flowmap:1``: ``x1 = z + F(z, 1)``.
Measured (``experiments/one_step.py``, 4000 steps, 4.2 minutes here): sliced-Wasserstein 0.028
at 1 NFE (the teacher: 1.12 with one Euler step, 0.014 with 128-NFE RK4; distillation from
200 000 teacher pairs: 0.015, in 8.4 minutes including the pairs).
"""

import ml_collections

from flowjax.config_files import sibling

common = sibling(__file__, "common")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = sibling(__file__, "toy2d_rf").get_config(arg)
    common.freeflow_objective(c)
    common.finetune_optim(c, lr=5e-4, warmup_steps=100)
    c.train.num_steps = 4000
    return c
