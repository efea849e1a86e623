"""Data for flowjax: 2-D toy distributions, the bundled digits tfds set, a tfds image pipeline,
image folders, and images of mixed sizes as padded patch tokens (:mod:`flowjax.data.tokens`)
with the mixed-size sources that make them (:mod:`flowjax.data.mixed_sizes`).

Importing this package registers how to prepare ``sklearn_digits`` (offline), so
``tfds.data_source("sklearn_digits", data_dir=...)`` works once :func:`prepare_digits` has run
(which defines the tfds builder class).
Nothing here imports TensorFlow or downloads anything, and importing it does not import
tensorflow_datasets or grain (the readers import them): ``SklearnDigits``, the builder class,
is defined on first access.
"""

from flowjax.data.base import (
    BatchLayout,
    FeatureMetric,
    batch_keys_of,
    check_source,
    device_batch_fn,
    feature_metric,
    fingerprint_of,
    has_eval_data,
    unavailable_reason,
)
from flowjax.data.digits import DIGITS_NAME, builder_class, prepare_digits
from flowjax.data.digits_arrays import NUM_CLASSES as DIGITS_NUM_CLASSES
from flowjax.data.digits_arrays import load_digits_numpy
from flowjax.data.feature_metrics import register_feature_metric
from flowjax.data.image_folder import ImageFolder, ImageFolderSource, center_crop, open_images
from flowjax.data.mixed_latents import (
    MixedLatents,
    MixedLatentSource,
    read_mixed_latents,
    write_mixed_latents,
)
from flowjax.data.mixed_sizes import (
    DigitsMixedSource,
    PhotosMixedSource,
    batch_grids,
    expected_padding,
    padding_fraction,
    size_buckets,
)
from flowjax.data.pairs import (
    PairSource,
    finalize_pairs,
    is_complete,
    load_pairs,
    pair_features,
    read_manifest,
    write_pairs,
)
from flowjax.data.sources import (
    ArrayFileSource,
    ArraySource,
    RecordedShapeSource,
    TfdsImageSource,
    ToySource,
    data_name,
    describe_source,
    load_array_file,
    make_source,
    register_source,
)
from flowjax.data.tfds_pipeline import (
    DatasetNotFoundError,
    ImageDataset,
    LocalBuilder,
    how_to_prepare,
    load_split_array,
    open_source,
    register_local_builder,
)
from flowjax.data.tokens import (
    TokenBatch,
    area_size,
    fit_versions,
    masked_token_mean,
    pack_images,
    resize_bicubic,
    resize_to_area,
    unpack_tokens,
)
from flowjax.data.toy2d import TOY_DISTRIBUTIONS, eight_gaussians_centres, sample_toy
from flowjax.types import DataSource


def __getattr__(name: str):
    if name == "SklearnDigits":  # defining it imports tensorflow_datasets
        return builder_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BatchLayout",
    "DataSource",
    "FeatureMetric",
    "batch_keys_of",
    "check_source",
    "device_batch_fn",
    "feature_metric",
    "fingerprint_of",
    "has_eval_data",
    "unavailable_reason",
    "LocalBuilder",
    "register_feature_metric",
    "register_local_builder",
    "register_source",
    "ArrayFileSource",
    "ImageFolder",
    "ImageFolderSource",
    "center_crop",
    "open_images",
    "ArraySource",
    "RecordedShapeSource",
    "describe_source",
    "load_array_file",
    "DIGITS_NAME",
    "DIGITS_NUM_CLASSES",
    "TOY_DISTRIBUTIONS",
    "DatasetNotFoundError",
    "ImageDataset",
    "PairSource",
    "SklearnDigits",
    "eight_gaussians_centres",
    "finalize_pairs",
    "is_complete",
    "load_pairs",
    "pair_features",
    "read_manifest",
    "write_pairs",
    "how_to_prepare",
    "load_digits_numpy",
    "load_split_array",
    "make_source",
    "data_name",
    "TfdsImageSource",
    "ToySource",
    "open_source",
    "prepare_digits",
    "sample_toy",
    "TokenBatch",
    "area_size",
    "fit_versions",
    "masked_token_mean",
    "pack_images",
    "resize_bicubic",
    "resize_to_area",
    "unpack_tokens",
    "DigitsMixedSource",
    "PhotosMixedSource",
    "batch_grids",
    "expected_padding",
    "padding_fraction",
    "size_buckets",
    "MixedLatents",
    "MixedLatentSource",
    "read_mixed_latents",
    "write_mixed_latents",
]
