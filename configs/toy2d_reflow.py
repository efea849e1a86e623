"""Reflow on the 2-D toy: k-rectified flow, the 2-rectified-flow++ recipe, distillation from pairs.

First train the teacher (the main job) and write its pairs (RK4, 64 NFE, per noise z0 at t = 0)::

    flowjax train --config=configs/toy2d_rf.py --workdir=/tmp/toy
    flowjax reflow --teacher=/tmp/toy --out=/tmp/toy_pairs --num_pairs=200000

then one of the variants (``configs/toy2d_reflow.py:<variant>``), each initialised from the
teacher's EMA weights (``init.workdir``) and trained on the pairs (``data.pairs_dir``)::

    flowjax train --config=configs/toy2d_reflow.py:2rf --workdir=/tmp/toy_2rf \\
        --config.data.pairs_dir=/tmp/toy_pairs --config.init.workdir=/tmp/toy

- ``2rf`` (default): Liu et al.'s reflow, ``t ~ U(1e-3, 1)``, L2; sample with Euler.
- ``rfpp``: Lee et al.'s 2-rectified-flow++ options: U-shaped t (a = 4), pseudo-Huber loss
  in their scaling ``(sqrt(||delta||^2 + c^2) - c) / d`` with ``c = 0.00054 d``
  (``objective.reflow.lpips_weights=FILE`` adds the LPIPS-Huber term for images).
- ``distill1``, ``distill2``, ``distill4``: m-step distillation from pairs, t on the m start
  times of a uniform grid (m = 1: the one-step map ``z -> z + v(z, 0)``); sample with
  ``euler:m``. Distil the 2-RF model by pointing ``init.workdir`` at its run and
  ``data.pairs_dir`` at pairs written from it.

A k-rectified flow is k - 1 rounds of (pairs from the last model, reflow from it).
Measured (``experiments/one_step.py``; 200 000 RK4 pairs of the main job's teacher; 4000
steps each; sliced-Wasserstein of 20 000 samples to held-out data, teacher's 128-NFE RK4
reference 0.014): 2-RF with Euler 0.016 / 0.015 / 0.015 at 1 / 2 / 4 NFE (the teacher's
Euler: 1.12 / 0.50 / 0.26), straightness 0.52 -> 0.00012; one-step distillation of the
teacher from its pairs 0.015; 2-RF distilled with m = 1, 2, 4 steps 0.015 each.
"""

import ml_collections

from flowjax.config_files import sibling

common = sibling(__file__, "common")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = sibling(__file__, "toy2d_rf").get_config()
    common.reflow_objective(c, arg or "2rf")
    common.finetune_optim(c, lr=5e-4, warmup_steps=100)  # a fine-tune from the teacher
    c.train.num_steps = 4000
    return c
