"""Reflow on the digits: 2-RF, 2-RF++ options and distillation from pairs, class-conditional.

    flowjax train --config=configs/digits_rf.py --workdir=/tmp/digits       # teacher
    flowjax reflow --teacher=/tmp/digits --out=/tmp/digits_pairs --num_pairs=20000 \\
        --nfe=32                                  # RK4, with the teacher's CFG scale 2 baked in
    flowjax train --config=configs/digits_reflow.py:2rf --workdir=/tmp/digits_2rf \\
        --config.data.pairs_dir=/tmp/digits_pairs --config.init.workdir=/tmp/digits

Variants as in ``configs/toy2d_reflow.py`` (``2rf``, ``rfpp``, ``distill1``, ``distill2``,
``distill4``). The pairs carry the teacher's guided samples and their labels, so the student
learns the guided flow directly: it is sampled without CFG (``eval.cfg_scale = 1``) and
trained without label dropout. ``rfpp`` with ``--config.objective.reflow.lpips_weights=FILE``
(a VGG16 LPIPS file, see ``flowjax.evaluation.lpips``) uses the LPIPS-Huber loss.
Measured (``experiments/one_step.py``; 20 000 RK4-32 pairs of ``configs/digits_rf.py``'s
teacher; 3000 steps each; digits-classifier Fréchet distance of 1000 samples to the test
split, teacher's 128-NFE RK4 reference 11.9): ``2rf`` with Euler 13.3 / 12.3 / 12.0 at
1 / 2 / 4 NFE (the teacher: 60.6 / 26.6 / 18.5), ``distill1`` from the teacher's pairs 12.8
at 1 NFE, ``distill1/2/4`` of the 2-RF on its own pairs 12.1 / 12.0 / 12.0; straightness
0.104 (teacher) -> 0.0055 (2-RF).
"""

import ml_collections

from flowjax.config_files import sibling
from flowjax.spec import parse_spec

common = sibling(__file__, "common")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = sibling(__file__, "digits_rf").get_config()
    common.reflow_objective(c, arg or "2rf")
    c.objective.label_dropout = 0.0
    c.eval.cfg_scale = 1.0
    if parse_spec(c.objective.time_sampler)[0] != "discrete":
        c.eval.samplers = ("euler:1", "euler:2", "euler:4", "heun:64")
    common.finetune_optim(c, lr=2e-4, warmup_steps=200)
    c.train.num_steps = 3000
    return c
