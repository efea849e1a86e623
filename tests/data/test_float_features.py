"""Float features (pre-computed autoencoder latents) pass through the image pipeline unscaled."""

import types

import numpy as np
import tensorflow_datasets as tfds

from flowjax.data import tfds_pipeline
from flowjax.data.tfds_pipeline import ImageDataset


class _LatentSource:
    """What ``tfds.data_source`` returns for a prepared latent data set: random access + info."""

    def __init__(self, n=12):
        rng = np.random.RandomState(0)
        self.x = rng.normal(size=(n, 4, 4, 2)).astype(np.float32)
        self.y = rng.randint(0, 3, size=n)
        features = tfds.features.FeaturesDict(
            {
                "image": tfds.features.Tensor(shape=(4, 4, 2), dtype=np.float32),
                "label": tfds.features.ClassLabel(num_classes=3),
            }
        )
        self.dataset_info = types.SimpleNamespace(features=features)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": self.y[i]}


def test_float_latents_are_used_as_they_are(monkeypatch):
    source = _LatentSource()
    monkeypatch.setattr(tfds_pipeline, "open_source", lambda *a, **k: source)
    ds = ImageDataset("latents", global_batch_size=4, seed=0, shard_index=0, shard_count=1)
    assert ds.element_shape == (4, 4, 2) and ds.num_classes == 3
    batch = ds.get_batch(0)
    rows = ds.example_indices(0)
    np.testing.assert_array_equal(batch["x1"], source.x[rows])
    np.testing.assert_array_equal(batch["label"], source.y[rows])
