"""Weight files of pretrained networks: flat ``.npz`` trees and foreign state dicts.

Every pretrained network in flowjax (the VAE, FID's InceptionV3, LPIPS' VGG16) stores its
parameters as one uncompressed ``.npz`` whose keys are the flax parameter paths joined by
``/`` (``encoder/conv_in/kernel``). This module holds what those three share:

- :func:`flatten` / :func:`unflatten`: a nested flax parameter dict <-> the flat ``.npz`` keys.
- :func:`read_npz` / :func:`save_npz`: read a weight archive with a clear error (naming what
  the file is instead, when :func:`foreign_kind` recognises it: a torch checkpoint and the
  network its keys belong to, a ``.safetensors`` file, ...), write one atomically (temporary
  file in the same directory, then a rename).
- :func:`read_state_dict`: a published checkpoint as ``{name: array}``: ``.safetensors`` is
  parsed with numpy (:func:`read_safetensors`), ``.npz`` with numpy, anything else
  (``.pth``, ``.bin``) with ``torch.load`` on the CPU. torch is imported inside that call
  only; flowjax never depends on it and importing this module never imports it.
- :func:`to_numpy`: a torch tensor or array as a numpy array, without importing torch.
- :class:`WeightSpec`: one network's weight file as a value (its name, the command that makes
  the file, how its random test weights are drawn) with what every network does with it
  written once: a missing file's error, reading, the key / shape / value checks, the atomic
  write, random weights. Each network supplies only its expected shapes (which it infers from
  the keys it is given: widths, channel layout) and its own extra checks.

The converter command lines (``flowjax convert-vae``, ``convert-inception``, ``convert-lpips``)
live in :mod:`flowjax.cli`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested dict as ``{"a/b/c": leaf}`` (the ``.npz`` key layout)."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def unflatten(flat: Mapping[str, Any]) -> dict:
    """The inverse of :func:`flatten`: ``{"a/b/c": leaf}`` -> ``{"a": {"b": {"c": leaf}}}``."""
    tree: dict = {}
    for key, v in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


def few(items: Sequence[str], sep: str = ", ", limit: int = 6) -> str:
    """The first ``limit`` items joined by ``sep`` (and ``...`` if there are more)."""
    return sep.join(items[:limit]) + (f"{sep}..." if len(items) > limit else "")


def tree_shapes(tree: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """``{flat key: shape}`` of a nested tree of arrays (or of ``jax.eval_shape``'s
    ``ShapeDtypeStruct`` leaves): the expected layout of a network's weight file."""
    return {k: tuple(v.shape) for k, v in flatten(tree).items()}


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor (detached, on the CPU; half or bfloat16 as float32) or any array-like as
    a numpy array."""
    if hasattr(value, "detach"):  # a torch tensor; torch itself is never imported here
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()  # numpy has no bfloat16
        value = value.numpy()
    return np.asarray(value)


# Parameter names that tell which network a foreign checkpoint holds (searched as bytes in the
# key list of a torch pickle or a .safetensors header; nothing is ever unpickled).
_NETWORK_MARKERS = (
    (b"encoder.conv_in.weight", "a diffusers AutoencoderKL (VAE)"),
    (b"Mixed_5b.", "an InceptionV3 (the FID network)"),
    (b"time_embedding.", "a diffusion UNet"),
    (b"lin0.model.", "LPIPS' linear heads"),
)
_MAX_HEADER = 100 << 20


def _network_of(raw: bytes) -> str:
    for marker, name in _NETWORK_MARKERS:
        if marker in raw:
            return f" of {name}"
    return ""


def foreign_kind(path: str | os.PathLike) -> str | None:
    """What a weight file that is not a flowjax ``.npz`` is, judged from its bytes only (no
    unpickling), or ``None`` (an ``.npz``/``.npy``, or not recognised).

    E.g. ``"a PyTorch checkpoint (torch.save) of a diffusers AutoencoderKL (VAE)"`` for a
    diffusers ``diffusion_pytorch_model.bin``, ``"... of an InceptionV3 (the FID network)"`` for
    pytorch-fid's ``pt_inception-*.pth``, ``"a .safetensors file ..."``, ``"an HDF5 file ..."``.
    """
    with open(path, "rb") as f:
        head = f.read(8)
        if head.startswith(b"PK"):  # torch.save's zip; an .npz is a zip of .npy files
            try:
                with zipfile.ZipFile(f) as z:
                    pickles = [n for n in z.namelist() if n.rsplit("/", 1)[-1] == "data.pkl"]
                    if not pickles:
                        return None
                    return "a PyTorch checkpoint (torch.save)" + _network_of(z.read(pickles[0]))
            except (zipfile.BadZipFile, OSError):
                return None
        if head[:1] == b"\x80":  # a pickle: torch's legacy format
            return "a PyTorch pickle checkpoint" + _network_of(head + f.read(1 << 20))
        if head.startswith(b"\x89HDF"):
            return "an HDF5 file (Keras / TensorFlow weights)"
        if len(head) == 8 and 2 <= struct.unpack("<Q", head)[0] <= _MAX_HEADER:
            raw = f.read(struct.unpack("<Q", head)[0])
            if raw[:1] == b"{" and raw.rstrip()[-1:] == b"}":
                return "a .safetensors file" + _network_of(raw)
    return None


# First bytes of files a user may give where a NumPy archive is expected (beyond the weight
# files :func:`foreign_kind` recognises).
_OTHER_KINDS = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip file"),
    (b"%PDF", "a PDF document"),
    (b"BZh", "a bzip2 file"),
    (b"\xfd7zXZ", "an xz file"),
)
NPZ_MAGIC = b"PK"  # an .npz is a zip archive of .npy files
NPY_MAGIC = b"\x93NUMPY"


def file_kind(path: str | os.PathLike) -> str:
    """What the file at ``path`` is, judged from its first bytes only (nothing is parsed or
    unpickled): ``"a NumPy .npz archive"``, ``"a NumPy .npy array"``, a kind
    :func:`foreign_kind` recognises, an image, compressed or text file, else ``"a file of
    another kind (it starts with b'...')"``."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "an empty file"
    if head.startswith(NPY_MAGIC):
        return "a NumPy .npy array"
    kind = foreign_kind(path)
    if kind is not None:
        return kind
    if head.startswith(NPZ_MAGIC):
        return "a NumPy .npz archive" if head.startswith(b"PK\x03\x04") else "a zip archive"
    for magic, name in _OTHER_KINDS:
        if head.startswith(magic):
            return name
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:  # binary, or a character cut at the 512th byte
        text = head[: err.start].decode("utf-8") if err.start >= len(head) - 3 else ""
    if text and all(c.isprintable() or c in "\n\r\t" for c in text):
        return f"a text file (it starts with {text[:24]!r})"
    return f"a file of another kind (it starts with {head[:8]!r})"


def numpy_file_error(path: str | os.PathLike, what: str, hint: str = "") -> str | None:
    """``None`` if the file at ``path`` starts as a NumPy file of its extension (``.npy``:
    the ``.npy`` magic, otherwise a zip archive, as an ``.npz`` is), else the one-line error
    ``"<path> is not <what>: it is <kind><hint>"`` (:func:`file_kind`), so numpy's own error
    for a foreign file (a hint to unpickle it) is never shown."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(len(NPY_MAGIC))
    expected = NPY_MAGIC if path.endswith(".npy") else NPZ_MAGIC
    if head.startswith(expected):
        return None
    return f"{path} is not {what}: it is {file_kind(path)}{hint}"


def read_npz(path: str | os.PathLike, what: str, hint: str = "") -> dict[str, np.ndarray]:
    """All arrays of the ``.npz`` weight archive at ``path`` (no pickles).

    ``what`` names the network (``"LPIPS"``). Raises a ``ValueError`` ``"<path> is not a
    readable <what> .npz weight file (<reason>)<hint>"`` for an unreadable file (``hint``
    defaults to ``"."``), ``"... file: it is <kind><hint>"`` for a file :func:`foreign_kind`
    recognises (a torch checkpoint, ...), and one naming the single array for a plain ``.npy``.
    """
    hint = hint or "."
    path = os.fspath(path)
    if os.path.isfile(path):  # a missing file: np.load's own error below
        kind = foreign_kind(path)  # zip-based torch checkpoints pass the npz magic check
        if kind is not None:
            raise ValueError(
                f"{path} is not a readable {what} .npz weight file: it is {kind}{hint}"
            )
        foreign = numpy_file_error(path, f"a readable {what} .npz weight file", hint)
        if foreign:
            raise ValueError(foreign)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable {what} .npz weight file ({err}){hint}") from err
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{path} holds a single .npy array, not a {what} .npz weight archive{hint}"
        )
    try:
        return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable {what} .npz weight file ({err}){hint}") from err
    finally:
        data.close()


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], prefix: str) -> str:
    """Write ``arrays`` as an uncompressed ``.npz`` atomically; returns the path written.

    ``.npz`` is appended to ``path`` if missing (as ``np.savez`` does). The file goes to a
    temporary name ``.<prefix>.*.tmp`` in the same directory and is then renamed, so a reader
    never sees half a file.
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{prefix}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a ``.safetensors`` file as numpy arrays (bf16 becomes float32).

    The format: an 8-byte little-endian header length ``n``, ``n`` bytes of JSON
    ``{name: {"dtype", "shape", "data_offsets": [begin, end]}}``, then the raw little-endian
    data, offsets relative to its start.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path} is not a .safetensors file (too short).")
    (n,) = struct.unpack("<Q", raw[:8])
    try:
        header = json.loads(raw[8 : 8 + n])
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a .safetensors file (bad header: {err}).") from err
    body = memoryview(raw)[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype, shape = info["dtype"], tuple(info["shape"])
        chunk = body[begin:end]
        if dtype == "BF16":
            bits = np.frombuffer(chunk, "<u2").astype(np.uint32) << 16
            a = bits.view(np.float32)
        elif dtype in _SAFETENSORS_DTYPES:
            a = np.frombuffer(chunk, np.dtype(_SAFETENSORS_DTYPES[dtype]).newbyteorder("<"))
        else:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {dtype}.")
        out[name] = a.reshape(shape).copy()
    return out


def read_state_dict(path: str | os.PathLike) -> Mapping[str, Any]:
    """A published checkpoint as ``{name: array or torch tensor}``.

    ``.safetensors`` and ``.npz`` are read with numpy; any other file (``.pth``, ``.bin``) with
    ``torch.load(path, map_location="cpu", weights_only=True)``, unwrapping a
    ``{"state_dict": ...}`` container. torch is imported here and only here; without it, a
    ``SystemExit`` says to install it (the CPU wheel is enough) for this one conversion.
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    try:
        import torch  # converters only; flowjax never imports torch otherwise
    except ImportError:
        raise SystemExit(
            f"reading the torch checkpoint {path} needs torch (pip install torch; the CPU wheel "
            "is enough); .safetensors and .npz files need nothing. flowjax itself never "
            "imports torch."
        ) from None
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    return obj


def he_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """``N(0, 2 / fan_in)`` with ``fan_in`` the product of all axes but the last (an HWIO
    kernel's ``kh kw C_in``, a dense ``[in, out]`` kernel's ``in``): activations keep their
    scale through ReLU layers."""
    return rng.standard_normal(shape) * np.sqrt(2.0 / int(np.prod(shape[:-1])))


#: A random-weight rule: ``(rng, shape) -> array`` added to a key's initial value.
Noise = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class WeightSpec:
    """One pretrained network's weight file, and what is done with it, written once.

    The file is a flat ``.npz`` (:func:`flatten`'s keys). A network module keeps one
    ``WeightSpec`` and supplies only what is its own: the expected ``{key: shape}`` (inferred
    from the keys it is given, so one spec serves every width) and any further checks.

    Attributes:
      what: the network as the messages name it (``"VAE"``, ``"Inception"``, ``"LPIPS"``).
      prefix: the temporary-file prefix of :meth:`save` (``.<prefix>.*.tmp``).
      convert: the command that makes a weight file, ``{out}`` standing for its path.
      example_out: the output path the error messages show in ``convert``.
      make_file: what the missing-file error advises after "flowjax never downloads
        weights; ", ``{command}`` standing for ``convert`` with the missing path.
      wrong_keys: the error for a dict with missing or unexpected keys, ``{keys}`` standing
        for "N missing keys (...) and M unexpected keys (...)" and ``{command}`` for
        ``convert`` with ``example_out``.
      read_hint: what follows an unreadable file's error (default ``"."``), ``{command}`` as
        in ``wrong_keys``.
      noise: the random-weight rules, ``(key suffix, rule)`` pairs, the first matching suffix
        wins (``""`` matches every key; a key no rule matches keeps its initial value).
    """

    what: str
    prefix: str
    convert: str
    example_out: str
    make_file: str
    wrong_keys: str
    read_hint: str = ""
    noise: tuple[tuple[str, Noise], ...] = ()

    def command(self, out: str | os.PathLike | None = None) -> str:
        """The converter command writing ``out`` (default ``example_out``)."""
        return self.convert.format(out=self.example_out if out is None else os.fspath(out))

    def require_file(self, path: str | os.PathLike) -> str:
        """``path`` as a string, or a ``FileNotFoundError`` saying how to make the file."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            advice = self.make_file.format(command=self.command(path))
            raise FileNotFoundError(
                f"{self.what} weight file {path!r} does not exist. flowjax never downloads "
                f"weights; {advice}"
            )
        return path

    def read(self, path: str | os.PathLike) -> dict[str, np.ndarray]:
        """The arrays of the weight file at ``path``, unchecked (:func:`read_npz`'s errors)."""
        path = self.require_file(path)
        return read_npz(path, self.what, self.read_hint.format(command=self.command()))

    def check_mapping(self, weights: Any) -> Mapping[str, Any]:
        if not isinstance(weights, Mapping):
            raise ValueError(
                f"{self.what} weights must be a mapping of key -> array, got {type(weights)}."
            )
        return weights

    def check(
        self,
        weights: Mapping[str, Any],
        expected: Mapping[str, tuple[int, ...]],
        shape_context: str = "",
    ) -> dict[str, np.ndarray]:
        """A float32 copy of ``weights`` holding exactly the keys and shapes of ``expected``.

        Raises a ``ValueError`` naming the missing / unexpected keys (``wrong_keys``), the
        keys of the wrong shape (``shape_context`` is said after "wrong shapes", e.g. the
        widths they were expected for), a non-real array, or one holding NaN or inf.
        """
        weights = self.check_mapping(weights)
        missing = [k for k in expected if k not in weights]
        unexpected = sorted(set(weights) - set(expected))
        if missing or unexpected:
            parts = [f"{len(missing)} missing keys ({few(missing)})"] if missing else []
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected keys ({few(unexpected)})")
            raise ValueError(
                self.wrong_keys.format(keys=" and ".join(parts), command=self.command())
            )
        wrong = [
            f"{k}: {tuple(np.shape(weights[k]))} (expected {s})"
            for k, s in expected.items()
            if tuple(np.shape(weights[k])) != tuple(s)
        ]
        if wrong:
            raise ValueError(
                f"{self.what} weights have wrong shapes{shape_context}: {few(wrong, '; ')}."
            )
        clean = {}
        for k in expected:
            a = np.asarray(weights[k])
            if a.dtype.kind not in "fiu" and a.dtype.name != "bfloat16":
                raise ValueError(
                    f"{self.what} weight {k} must be a real array, got dtype {a.dtype}."
                )
            a = a.astype(np.float32)
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{self.what} weight {k} contains NaN or inf.")
            clean[k] = a
        return clean

    def save(
        self,
        path: str | os.PathLike,
        clean: Mapping[str, np.ndarray],
        extra: Mapping[str, np.ndarray] | None = None,
    ) -> str:
        """Write checked weights (plus ``extra`` entries, e.g. settings) as an uncompressed
        ``.npz`` atomically (:func:`save_npz`); returns the path written."""
        return save_npz(path, {**clean, **(extra or {})}, self.prefix)

    def random(self, initial: Mapping[str, Any], seed: int) -> dict[str, np.ndarray]:
        """Random weights for tests and smoke runs: ``initial[k]`` (an array, or a shape for
        zeros) plus the first matching ``noise`` rule's draw, float32; one NumPy
        ``default_rng(seed)`` drawn in key order."""
        rng = np.random.default_rng(seed)
        out = {}
        for k, v in initial.items():
            a = np.zeros(v) if isinstance(v, tuple) else np.asarray(v)
            rule = next((r for suffix, r in self.noise if k.endswith(suffix)), None)
            out[k] = (a if rule is None else a + rule(rng, a.shape)).astype(np.float32)
        return out
