"""Shared fixtures. JAX runs on the CPU; tests keep models tiny and reuse compiled functions."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
