"""Class-conditional Decomposable Flow Matching on the 8x8 UCI digits (runs on a CPU).

    flowjax train --config=configs/digits_dfm.py --workdir=/tmp/flowjax_digits_dfm

Two pyramid stages (docs/maths/decomposable.md): a 4x4 coarse image and the 8x8 detail, one
``decomposable_dit`` with patch 1 on the 4x4 stage and patch 2 on the 8x8 stage, so both give
the same 4x4 grid of 16 tokens. Its trunk is the one of ``configs/digits_dit.py`` (width 128,
depth 4, 4 heads, 16 tokens, DiT's 1000 t time scale), which is the base flow to compare with at
matched size and compute: the DFM network only adds a second patch embedder, timestep
embedder and output head (1.36M vs 1.27M parameters; 0.6% more FLOPs per evaluation).
Training follows the paper's sampler: the stage being generated is the coarse one with
probability 0.9, its time logit-normal(0, 1), the earlier stages' logit-normal(1.5, 1), later
stages masked. The staged sampler moves the coarse stage to ``thresholds[0] = 0.9`` first,
then the detail 0 -> 1 with the coarse stage finishing alongside; the NFE is split 3:1
(``phase_weights``). Evaluation is as in ``configs/digits_dit.py``; the samplers strings
``"euler:8"`` etc. are the total NFE over both phases.

Overrides: ``--config.objective.decomposable.thresholds='(0.7,)'``,
``--config.objective.decomposable.phase_weights='(1, 1)'``,
``--config.objective.decomposable.stage_probs='(0.8, 0.2)'``,
``--config.model.hidden_size=...``, ``--config.eval.samplers='("euler:8", "heun:16")'``.
"""

import ml_collections

from flowjax.config_files import sibling

digits_dit = sibling(__file__, "digits_dit")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    c = digits_dit.get_config()
    c.model = dict(
        name="decomposable_dit",
        num_stages=2,
        patch_size=1,
        hidden_size=128,
        depth=4,
        num_heads=4,
        mlp_ratio=4.0,
        time_scale=1000.0,
        conditional=True,
        dtype="float32",
        param_dtype="float32",
        remat=False,
    )
    c.objective.name = "decomposable"
    c.objective.decomposable = dict(
        num_stages=2,
        stage_probs=(0.9, 0.1),
        current_sampler="logit_normal,loc=0,scale=1",
        earlier_loc=1.5,
        earlier_scale=1.0,
        thresholds=(0.9,),
        phase_weights=(3.0, 1.0),
    )
    c.eval.samplers = ("euler:4", "euler:8", "euler:40", "heun:64")
    return c
