"""A prepared ``sklearn_digits`` tfds directory shared by the data tests (one per worker)."""

from __future__ import annotations

import pytest

from flowjax.data import prepare_digits


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> str:
    return prepare_digits(tmp_path_factory.mktemp("tfds"))
