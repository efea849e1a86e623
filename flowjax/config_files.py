"""Finding and loading config files (``configs/*.py``, each defining ``get_config(arg=None)``).

A config is named in one of two ways, on the command line and in :func:`load_config`:

- by **name**: ``toy2d_rf`` or ``toy2d_reflow:2rf`` (``name:arg``), looked up in the bundled
  config directory (:data:`CONFIG_DIR`);
- by **path**: ``configs/toy2d_rf.py`` or ``/somewhere/my_config.py:variant``.

The bundled directory is the repository's top-level ``configs/`` in a clone or an editable
install, and the same files installed as the subpackage ``flowjax.configs`` by a wheel
(``setup.py`` maps one onto the other), so names resolve after any kind of install.

Bundled configs are named ``<data>_<method>[_variant]`` (``toy2d_rf``, ``digits_meanflow``,
``imagenet256_dit``); the names they had before that scheme still load (:data:`RENAMED`).

Config files are plain Python modules loaded by path, so one config builds on another
through :func:`sibling`, which works in all three layouts::

    from flowjax.config_files import sibling

    def get_config(arg=None):
        c = sibling(__file__, "toy2d_rf").get_config(arg)
        c.objective.name = "meanflow"
        return c

The sections several configs share (the defaults every job starts from, the DiT recipe and its
logical-axis rules, the reflow / MeanFlow / FreeFlow objective sections) are stated once, in
the bundled ``common.py``; it is not a config (it has no ``get_config``) and configs load it
the same way, ``sibling(__file__, "common")``.

Every config's ``data`` section is built by :func:`data_section`, so it has the fields of
every data kind and ``--config.data.kind=array --config.data.path=x.npz`` (or an image folder)
works with any config.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from types import ModuleType
from typing import Any

from ml_collections import config_dict

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _bundled_config_dir() -> str:
    """``flowjax/configs`` after a wheel install, else the clone's top-level ``configs/``."""
    installed = os.path.join(_PACKAGE_DIR, "configs")
    if os.path.isfile(os.path.join(installed, "toy2d_rf.py")):
        return installed
    return os.path.join(os.path.dirname(_PACKAGE_DIR), "configs")


CONFIG_DIR = _bundled_config_dir()

# Module names of config files executed by :func:`load_module` (how their frames are known).
_MODULE_PREFIX = "flowjax_config_"

log = logging.getLogger(__name__)

#: Bundled configs renamed to the ``<data>_<method>[_variant]`` scheme: old name -> new name.
#: Runs, notebooks and scripts name them the old way, so the old names keep resolving (by name
#: and as ``configs/<old>.py``); each use logs one line naming the new one.
RENAMED = {
    "freeflow_digits": "digits_freeflow",
    "freeflow_toy2d": "toy2d_freeflow",
    "meanflow_digits": "digits_meanflow",
    "meanflow_toy2d": "toy2d_meanflow",
    "reflow_digits": "digits_reflow",
    "reflow_toy2d": "toy2d_reflow",
}


def _is_config(path: str) -> bool:
    """Whether the Python file at ``path`` is a config (defines ``get_config``)."""
    with open(path, encoding="utf-8") as f:
        return "\ndef get_config(" in "\n" + f.read()


def config_names(config_dir: str = CONFIG_DIR) -> list[str]:
    """Names of the bundled configs: the files ``<name>.py`` of ``config_dir`` that define
    ``get_config`` (so not ``common.py``, the sections they share)."""
    if not os.path.isdir(config_dir):
        return []
    return sorted(
        f[:-3]
        for f in os.listdir(config_dir)
        if f.endswith(".py") and not f.startswith("_") and _is_config(os.path.join(config_dir, f))
    )


def resolve(spec: str, config_dir: str = CONFIG_DIR) -> str:
    """The file a config spec names, keeping any ``:arg`` suffix.

    ``"toy2d_rf"`` -> ``<CONFIG_DIR>/toy2d_rf.py``; ``"toy2d_reflow:2rf"`` ->
    ``<CONFIG_DIR>/toy2d_reflow.py:2rf``; an existing path is returned unchanged. A relative
    path ``configs/<name>.py`` that does not exist from the current directory (a wheel install
    run outside a clone) falls back to the bundled file of that name. A name of
    :data:`RENAMED` resolves to the renamed file (``"reflow_toy2d:2rf"`` ->
    ``<CONFIG_DIR>/toy2d_reflow.py:2rf``) and logs the new name.

    Raises:
      FileNotFoundError: a one-line message naming the bundled configs.
    """
    path, sep, arg = spec.partition(":")
    suffix = sep + arg
    if os.path.exists(os.path.expanduser(path)):
        return spec
    looks_like_path = path.endswith(".py") or os.sep in path or "/" in path
    name = os.path.splitext(os.path.basename(path))[0]
    relative_configs = os.path.normpath(os.path.dirname(path)) == "configs"
    if not looks_like_path or relative_configs:
        if name in RENAMED and not os.path.isfile(os.path.join(config_dir, f"{name}.py")):
            log.warning("config %r is now named %r; the old name still works", name, RENAMED[name])
            name = RENAMED[name]
        if name in config_names(config_dir):
            return os.path.join(config_dir, f"{name}.py") + suffix
    known = ", ".join(config_names(config_dir)) or "none found"
    what = "No such file" if looks_like_path else "No such file or bundled config"
    raise FileNotFoundError(
        f"{what}: {path!r}; give a path to a config file or one of the bundled names: {known}"
    )


def load_module(path: str) -> ModuleType:
    """Execute the config file at ``path`` and return it as a module."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"no config file {path}")
    name = _MODULE_PREFIX + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config_file_error(err: BaseException, path: str | None = None) -> str | None:
    """One line for an error raised while a config file was executed, or None if it was not.

    ``"<file>, line <n>: <Type>: <message>"``: for a ``SyntaxError`` its own file and line;
    otherwise the innermost traceback frame in a config file (``path``, or one loaded by
    :func:`load_module`, e.g. through :func:`sibling`). The error reported is the innermost of
    the chain: loaders re-raise what a config file raised with the whole traceback as their
    message.
    """
    chain = [err]
    while (chain[-1].__cause__ or chain[-1].__context__) not in (None, *chain):
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    for error in reversed(chain):
        if isinstance(error, SyntaxError) and error.filename:
            where, message = (error.filename, error.lineno), str(error.msg)
        else:
            where, message = _config_frame(error, path), str(error)
        if where is not None:
            first = (message.strip().splitlines() or [""])[0]
            return f"{where[0]}, line {where[1]}: {type(error).__name__}: {first}"
    return None


def _config_frame(error: BaseException, path: str | None) -> tuple[str, int] | None:
    """``(file, line)`` of the innermost frame of ``error``'s traceback in a config file."""
    target = os.path.abspath(os.path.expanduser(path)) if path else None
    found, tb = None, error.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        name = str(tb.tb_frame.f_globals.get("__name__", ""))
        if name.startswith(_MODULE_PREFIX) or os.path.abspath(code.co_filename) == target:
            found = (code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


def sibling(anchor_file: str, name: str) -> ModuleType:
    """The config file ``name``.py in the directory of ``anchor_file`` (pass ``__file__``)."""
    return load_module(os.path.join(os.path.dirname(os.path.abspath(anchor_file)), f"{name}.py"))


def load_config(name_or_path: str, arg: str | None = None, config_dir: str = CONFIG_DIR) -> Any:
    """``get_config(arg)`` of a config given by name or path (see :func:`resolve`).

    ``load_config("toy2d_reflow", "2rf")`` and ``load_config("toy2d_reflow:2rf")`` are the same;
    an explicit ``arg`` wins over a ``:arg`` suffix.
    """
    path, _, suffix_arg = resolve(name_or_path, config_dir).partition(":")
    return load_module(path).get_config(arg if arg is not None else (suffix_arg or None))


#: The fields of every config's ``data`` section and their types (see
#: :mod:`flowjax.data.sources` for what each kind reads); unstated ones are ``None``, which
#: leaves the source's own default.
DATA_FIELDS = {
    # toy2d, tfds, array, image_folder, latents, digits_mixed, photos_mixed, mixed_latents
    "kind": str,
    "name": str,  # toy2d / tfds / latents; array and image_folder runs record the file's name
    "path": str,  # array: FILE.npz / FILE.npy; image_folder, latents, mixed_latents: DIR
    "eval_path": str,  # array / image_folder: held-out data (else eval_fraction of the rows)
    "eval_fraction": float,
    "resolution": int,  # image_folder: side of the square crops
    "channels": int,  # image_folder: 3 (RGB) or 1 (grey)
    "class_subfolders": bool,  # image_folder: top-level subfolders are classes
    "random_flip": bool,  # tfds / image_folder
    "data_dir": str,  # tfds
    "split": str,  # tfds
    "eval_split": str,  # tfds
    "pairs_dir": str,  # any kind: train on reflow pairs written by `flowjax reflow`
    # digits_mixed / photos_mixed / mixed_latents (images of mixed sizes as token batches):
    "sizes": tuple,  # digits_mixed: training sizes ((H, W), ...), multiples of patch_size
    "crop_sizes": tuple,  # photos_mixed: crop sizes ((H, W), ...) before the area rule
    "side": int,  # photos_mixed: the area rule's side (at most (side / patch_size)^2 tokens)
    "patch_size": int,  # the model's patch (tokens of patch_size^2 C features)
    "max_tokens": int,  # the longest token sequence allowed
    "eval_size": tuple,  # (H, W) the run evaluates and samples at
    "bucket_padding": float,  # the largest padded fraction of a row in a size bucket
}


def data_section(kind: str, name: str, **stated: Any) -> config_dict.ConfigDict:
    """A config's ``data`` section: every field of :data:`DATA_FIELDS`, ``None`` unless stated.

    ``data_section("tfds", "cifar10", split="train")``; an unknown field is a ``KeyError``.
    """
    unknown = sorted(set(stated) - set(DATA_FIELDS))
    if unknown:
        raise KeyError(
            f"data_section: unknown field(s) {unknown}; the fields are {list(DATA_FIELDS)}"
        )
    section = config_dict.ConfigDict(
        {field: config_dict.placeholder(kind_) for field, kind_ in DATA_FIELDS.items()}
    )
    section.update(dict(stated, kind=kind, name=name))
    return section
