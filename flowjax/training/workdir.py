"""The workdir's guards, checked before any work: one writer, the same config, a usable disk.

- :func:`prepare_workdir`: ``~`` expanded, the directory created, refused when it is a file
  or not writable (one line, not a traceback).
- :class:`WorkdirLock`: ``<workdir>/LOCK`` holds the writer's host, pid and start time. A
  second writer stops at once naming the holder; a lock whose process is gone (same host, pid
  not alive) is stale and taken over with a warning. In a multi-host job process 0 holds it.
- :func:`check_config_change`: the stored ``config.json`` against the new config. Fields that
  cannot change the training state (:data:`RESUMABLE_CHANGES`: evaluation, logging,
  checkpoint cadence, the mesh, ``num_steps`` upwards) may change on resume; any other change
  is refused with the list of changed fields and the way out (a new workdir, or
  ``allow=("field", ...)`` / ``allow=True`` for an intended change such as a fine-tune).
- :func:`remove_partial_checkpoints`: temporary directories a killed save left behind.
- :func:`remove_if_empty`: the empty directories of a run refused at set-up, in a workdir it
  created itself (a directory that holds any file, or existed before, is kept).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import socket
from typing import Any, Iterable

from flowjax.objectives.registry import upgrade_time_sampler
from flowjax.time import laws
from flowjax.training.faults import ConfigChangedError, SetupError, WorkdirLockedError

log = logging.getLogger(__name__)

LOCK_NAME = "LOCK"

# Config fields (dotted prefixes) whose change cannot alter the trained state: a resumed run
# with a new value continues exactly where the old one stopped.
RESUMABLE_CHANGES = (
    "eval",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.async_checkpoint",
    "train.tensorboard",
    "train.progress",
    "train.preemption_check_every",
    "train.peak_flops_per_device",
    "train.grad_accum_steps",  # the same gradient, split into micro-batches
    "mesh",  # the checkpoint is restored onto any mesh
    "sharding",
    "init",  # only read by a fresh run
    "data.data_dir",  # where the data lives, not what it is
)


def prepare_workdir(workdir: str) -> str:
    """``workdir`` with ``~`` expanded, absolute, created, and checked to be writable."""
    path = os.path.abspath(os.path.expanduser(str(workdir)))
    if os.path.exists(path) and not os.path.isdir(path):
        raise SetupError(f"workdir {path} is a file; pass a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise SetupError(f"cannot create workdir {path}: {err.strerror or err}") from err
    for sub in ("", "checkpoints"):
        target = os.path.join(path, sub)
        if sub and os.path.exists(target) and not os.path.isdir(target):
            raise SetupError(f"{target} is a file; move it away (checkpoints are saved there)")
        if os.path.isdir(target) and not _writable(target):
            raise SetupError(
                f"{target} is not writable; fix its permissions or use another workdir"
            )
    return path


def remove_if_empty(workdir: str) -> bool:
    """Remove ``workdir`` and the directories under it, bottom up, where none holds a file
    (what a run refused at set-up leaves in a workdir it created); returns whether
    ``workdir`` is gone. A file anywhere keeps its directory and those above it."""
    for root, _, _ in os.walk(workdir, topdown=False):
        try:
            os.rmdir(root)
        except OSError:
            pass
    return not os.path.exists(workdir)


def _writable(directory: str) -> bool:
    """Whether a file can be created in ``directory`` (tried, as root ignores mode bits)."""
    probe = os.path.join(directory, f".write_probe_{os.getpid()}")
    try:
        with open(probe, "w", encoding="utf-8"):
            pass
        os.remove(probe)
        return True
    except OSError:
        return False


# -- the lock ---------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class WorkdirLock:
    """``<workdir>/LOCK``: exclusive for one writing process (see the module docstring).

    ``acquire()`` raises :class:`WorkdirLockedError` naming the holder; ``release()`` removes
    the file if it is still this process's. Inactive (a no-op) when ``enabled`` is false, e.g.
    on processes other than 0 of a multi-host job.
    """

    def __init__(self, workdir: str, *, enabled: bool = True):
        self.path = os.path.join(workdir, LOCK_NAME)
        self.enabled = enabled
        self.held = False
        self.info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
        }

    def acquire(self) -> None:
        if not self.enabled:
            return
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read()
                if holder is None or self._stale(holder):
                    log.warning(
                        "taking over the stale lock %s (%s)",
                        self.path,
                        _describe_holder(holder) if holder else "unreadable",
                    )
                    try:
                        os.remove(self.path)
                    except FileNotFoundError:
                        pass
                    continue
                raise WorkdirLockedError(
                    f"{os.path.dirname(self.path)} is in use by {_describe_holder(holder)}; "
                    f"wait for it to finish, stop it, or use another workdir (if that process "
                    f"is gone, delete {self.path})"
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.info, f)
            self.held = True
            return
        raise WorkdirLockedError(f"could not take the lock {self.path}; another writer races us")

    def _read(self) -> dict | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return None

    def _stale(self, holder: dict) -> bool:
        if not holder:  # vanished meanwhile
            return True
        if holder.get("host") != self.info["host"]:
            return False  # cannot tell: another host's process
        pid = int(holder.get("pid", -1))
        return pid == os.getpid() or pid <= 0 or not _pid_alive(pid)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        holder = self._read()
        if (
            holder
            and holder.get("pid") == self.info["pid"]
            and holder.get("host") == (self.info["host"])
        ):
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def _describe_holder(holder: dict) -> str:
    return f"pid {holder.get('pid')} on host {holder.get('host')} (started {holder.get('started')})"


# -- the config -------------------------------------------------------------------------------
def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def _plain(config: Any) -> dict:
    """A config (ConfigDict or dict) as plain JSON values (tuples become lists)."""
    tree = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return json.loads(json.dumps(tree, sort_keys=True, default=str))


def read_config_json(path: str) -> dict:
    """The JSON config stored at ``path``; a broken file is a one-line error naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)
    except ValueError as err:
        raise SetupError(
            f"cannot parse {path}: {err}; restore it from the checkpoint's meta or delete it"
        ) from err
    except OSError as err:
        raise SetupError(f"cannot read {path}: {err.strerror or err}") from err
    if not isinstance(stored, dict):
        raise SetupError(f"{path} does not hold a config (a JSON object)")
    return stored


def changed_fields(stored: dict, new: Any) -> list[str]:
    """Dotted names of the fields whose values differ (fields only in ``stored`` are not
    counted: later versions may record more next to the config)."""
    old, cur = _flatten(_plain(stored)), _flatten(_plain(new))
    return sorted(
        k for k, v in cur.items() if (k in old and old[k] != v) or (k not in old and v is not None)
    )


def _same_law(field: str, stored: dict, config: Any) -> bool:
    """True when ``objective.time_sampler`` differs only in spelling (``"logit_normal,loc=0"``
    and ``"logit_normal,loc=0.0,scale=1.0"`` build the same law)."""
    if field != "objective.time_sampler":
        return False
    try:
        old = laws.time_sampler_from_spec(stored["objective"]["time_sampler"])
        return old == laws.time_sampler_from_spec(config.objective.time_sampler)
    except (KeyError, TypeError, ValueError):
        return False


def _allowed(field: str, allow: Iterable[str]) -> bool:
    return any(field == a or field.startswith(a + ".") for a in allow)


def check_config_change(
    workdir: str,
    config: Any,
    saved_step: int | None,
    *,
    allow: bool | Iterable[str] = (),
) -> list[str]:
    """Refuse (:class:`ConfigChangedError`) a config that differs from the run's stored one.

    Only checked when the workdir holds a checkpoint (``saved_step`` not None): without one
    there is nothing to lose. Returns the changed fields that were accepted (logged by the
    caller). ``train.num_steps`` may grow; lowered below ``saved_step`` it is refused even when
    allowed (the run is already past it).
    """
    path = os.path.join(workdir, "config.json")
    if saved_step is None or not os.path.exists(path):
        return []
    stored = read_config_json(path)
    if isinstance(stored.get("objective", None), dict):  # runs from before the one spec form
        stored["objective"] = upgrade_time_sampler(stored["objective"])
    changed = [f for f in changed_fields(stored, config) if not _same_law(f, stored, config)]
    num_steps = int(config.train.num_steps)
    if "train.num_steps" in changed and num_steps < saved_step:
        raise ConfigChangedError(
            f"train.num_steps={num_steps} is below the step {saved_step} of the newest "
            f"checkpoint in {workdir}; pass num_steps >= {saved_step} to continue, or use a "
            f"new workdir"
        )
    resumable = RESUMABLE_CHANGES + ("train.num_steps",)
    allow_all = allow is True
    explicit = () if allow in (True, False, None) else tuple(allow)
    refused = [
        f for f in changed if not (allow_all or _allowed(f, resumable) or _allowed(f, explicit))
    ]
    if refused:
        old = _flatten(_plain(stored))
        new = _flatten(_plain(config))
        listed = ", ".join(f"{f} ({old.get(f)!r} -> {new.get(f)!r})" for f in refused)
        raise ConfigChangedError(
            f"{workdir} holds a run (step {saved_step}) trained with another config: {listed}. "
            f"Use a new workdir (config.init.workdir={workdir} starts from its weights), or "
            f"pass --allow_config_change={','.join(refused)} to continue this run with the new "
            f"values"
        )
    return changed


# -- the checkpoint directory -----------------------------------------------------------------
def saved_steps(checkpoint_dir: str) -> list[int]:
    """Steps of the finished checkpoints in ``checkpoint_dir`` (by their directory names)."""
    if not os.path.isdir(checkpoint_dir):
        return []
    return sorted(int(n) for n in os.listdir(checkpoint_dir) if n.isdigit())


def remove_partial_checkpoints(checkpoint_dir: str) -> list[str]:
    """Delete the temporary directories of saves that never finished (a kill, a full disk).

    Orbax writes ``<step>.orbax-checkpoint-tmp*`` and renames it when complete, so these are
    never a usable checkpoint; left in place, a resume can trip over them.
    """
    if not os.path.isdir(checkpoint_dir):
        return []
    removed = []
    for name in sorted(os.listdir(checkpoint_dir)):
        if ".orbax-checkpoint-tmp" in name:
            path = os.path.join(checkpoint_dir, name)
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
            removed.append(name)
    if removed:
        log.warning(
            "removed %d unfinished checkpoint save(s) from %s: %s",
            len(removed),
            checkpoint_dir,
            ", ".join(removed),
        )
    return removed
