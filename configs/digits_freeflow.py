"""FreeFlow on the digits: a class-conditional one-step student of the guided teacher, no data.

    flowjax train --config=configs/digits_rf.py --workdir=/tmp/digits          # teacher
    flowjax train --config=configs/digits_freeflow.py --workdir=/tmp/digits_ff \\
        --config.init.workdir=/tmp/digits

The teacher is queried with CFG scale 2 (its sampling scale; only for r >= 0.3 in the
correction term), labels are drawn uniformly, and the student is sampled in one step without
CFG (``flowmap:1``).
Measured (``experiments/one_step.py``; digits-classifier Fréchet distance of 1000 samples
to the test split): 12.7 at 1 NFE with the default 6800 steps (28.8 min here; 23.7 after
2000 steps, 10.7 min), level with one-step distillation from 20 000 teacher pairs (12.8,
36.3 min with the pairs); the teacher: 60.6 with one Euler step, 11.9 with 128-NFE RK4.
"""

import ml_collections

from flowjax.config_files import sibling

common = sibling(__file__, "common")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    c = sibling(__file__, "digits_rf").get_config()
    common.freeflow_objective(c)
    common.finetune_optim(c, lr=2e-4, warmup_steps=200)
    c.train.num_steps = 6800
    return c
