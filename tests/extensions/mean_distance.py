"""An example metric added from outside the library: the distance between the means of the
samples and of the held-out data, ``||mean(x) - mean(y)||`` (flattened; 0 when the first
moments agree, and exactly the shift ``|delta|`` when ``x = y + delta``).
"""

import dataclasses

import numpy as np

from flowjax.evaluation import register_metric
from flowjax.types import Metric


@dataclasses.dataclass(frozen=True)
class MeanDistance(Metric):
    default = False  # opt-in: a run scores it when config.eval.metrics names it

    def score(self, samples, reference, **kw):
        x = np.asarray(samples, np.float64).reshape(len(samples), -1)
        y = np.asarray(reference, np.float64).reshape(len(reference), -1)
        return {"mean_distance": float(np.linalg.norm(x.mean(0) - y.mean(0)))}


register_metric("mean_distance", MeanDistance)
