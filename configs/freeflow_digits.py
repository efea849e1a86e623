"""FreeFlow on the digits: a class-conditional one-step student of the guided teacher, no data.

    python -m flowjax.main --config=configs/digits_rf.py --workdir=/tmp/digits          # teacher
    python -m flowjax.main --config=configs/freeflow_digits.py --workdir=/tmp/digits_ff \\
        --config.init.workdir=/tmp/digits

The teacher is queried with CFG scale 2 (its sampling scale; only for r >= 0.3 in the
correction term), labels are drawn uniformly, and the student is sampled in one step without
CFG (``flowmap:1``).
RESULT_PLACEHOLDER
"""

import ml_collections

from flowjax.config_files import sibling


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = sibling(__file__, "digits_rf").get_config()
    sibling(__file__, "freeflow_toy2d").freeflow_objective(c)
    c.optim.lr = 2e-4
    c.optim.warmup_steps = 200
    c.train.num_steps = 2000
    return c
