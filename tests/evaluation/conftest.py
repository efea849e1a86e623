"""A digits feature extractor trained once per test session and shared by the xdist workers."""

from __future__ import annotations

import fcntl
import os

import pytest

from flowjax.evaluation import DigitsFeatureExtractor


@pytest.fixture(scope="session")
def digits_extractor(tmp_path_factory) -> tuple[DigitsFeatureExtractor, str]:
    """``(extractor, cache_dir)``; the first worker trains, the others read its cache file."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by all workers of this session
    cache_dir = str(base / "digits_classifier_cache")
    with open(base / "digits_classifier_cache.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            extractor = DigitsFeatureExtractor.load_or_train(cache_dir)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return extractor, cache_dir
