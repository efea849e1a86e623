"""Loading config files (``configs/*.py``, each defining ``get_config(arg=None)``) by path.

Config files are plain Python modules found by path (``--config=configs/x.py:variant``), not
an importable package, so one config builds on another through :func:`sibling`::

    from flowjax.config_files import sibling

    def get_config(arg=None):
        c = sibling(__file__, "toy2d_rf").get_config(arg)
        c.objective.name = "meanflow"
        return c

Scripts (experiments, benchmarks) load them with :func:`load_config`.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType
from typing import Any

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load_module(path: str) -> ModuleType:
    """Execute the config file at ``path`` and return it as a module."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"no config file {path}")
    name = "flowjax_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sibling(anchor_file: str, name: str) -> ModuleType:
    """The config file ``name``.py in the directory of ``anchor_file`` (pass ``__file__``)."""
    return load_module(os.path.join(os.path.dirname(os.path.abspath(anchor_file)), f"{name}.py"))


def load_config(name_or_path: str, arg: str | None = None, config_dir: str = CONFIG_DIR) -> Any:
    """``get_config(arg)`` of ``configs/<name>.py`` (or of a path to a config file)."""
    path = (
        name_or_path
        if name_or_path.endswith(".py")
        else os.path.join(config_dir, f"{name_or_path}.py")
    )
    return load_module(path).get_config(arg)
