"""Fault injection on the real loop (orbax checkpoints, the jitted step), one fault per test.

A finished 20-step run (checkpoints at 10 and 20) is trained once per module; each test
damages a copy of it and checks what the next start does: nothing is lost, nothing is moved
that is not damaged, and every refusal is a one-line :class:`SetupError` before any work.
"""

import json
import logging
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.training import (
    Checkpointer,
    CheckpointMismatchError,
    CheckpointSaveError,
    ConfigChangedError,
    Experiment,
    NoUsableCheckpointError,
    SetupError,
    WorkdirLockedError,
    load_run,
    read_metrics,
    train_and_evaluate,
)
from flowjax.training import checkpoint as ckpt_lib
from flowjax.training.validate import check_data_size
from flowjax.training.workdir import LOCK_NAME, WorkdirLock, prepare_workdir

from .conftest import tiny_config
from .test_loop import _Wrapped


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("finished")
    train_and_evaluate(tiny_config(), str(workdir))
    return workdir


@pytest.fixture
def run_copy(finished_run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(finished_run, target)
    return target


def _snapshot(workdir):
    """Every file under ``workdir`` with its bytes (to prove a refusal touched nothing)."""
    out = {}
    for root, _, files in os.walk(workdir):
        for f in files:
            path = os.path.join(root, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, workdir)] = fh.read()
    return out


def _data_files(step_dir):
    return [
        os.path.join(root, f)
        for root, _, files in os.walk(step_dir / "state")
        for f in files
        if os.sep + "d" in root
    ]


def _flip_bits(step_dir):
    """One bit at each eighth of the largest data file of a checkpoint (see the test below)."""
    big = max(_data_files(step_dir), key=os.path.getsize)
    data = bytearray(open(big, "rb").read())
    for i in range(1, 8):
        data[i * len(data) // 8] ^= 0x40
    open(big, "wb").write(bytes(data))


# -- 1. a changed config ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value, ways",
    [
        # other weight shapes: only a new workdir (resuming or starting from them fails)
        ("model.hidden", 32, ("new",)),
        # other optimizer-state shapes: a new workdir, from this run's weights or not
        ("optim.mu_dtype", "bfloat16", ("new", "init")),
        # the same shapes: the run may also continue with the new values
        ("objective.loss", "pseudo_huber", ("new", "init", "allow")),
        ("train.batch_size", 64, ("new", "init", "allow")),
        ("optim.lr", 1e-4, ("new", "init", "allow")),
    ],
)
def test_changed_config_is_refused_suggesting_only_what_can_work(run_copy, field, value, ways):
    """The refusal lists the field and offers exactly the ways out that work for it; nothing
    is touched. (A shape change used to be offered --allow_config_change, which then failed
    with a mismatch: test_allowed_shape_change_is_a_mismatch_not_corruption.)"""
    config = tiny_config()
    section, name = field.split(".")
    config[section][name] = value
    before = _snapshot(run_copy)
    with pytest.raises(ConfigChangedError, match=rf"{field} ") as info:
        train_and_evaluate(config, str(run_copy))
    message = str(info.value)
    assert "\n" not in message and "use a new workdir" in message.lower()
    assert (f"--allow_config_change={field}" in message) == ("allow" in ways), message
    assert (f"config.init.workdir={run_copy}" in message) == ("init" in ways), message
    assert _snapshot(run_copy) == before
    assert not (run_copy / "checkpoints.unreadable").exists()


def test_the_weights_of_another_shape_cannot_start_a_new_run(run_copy, tmp_path):
    """Why a width change is offered only a new workdir: config.init.workdir fails too."""
    config = tiny_config()
    config.model.hidden = 32
    config.init.workdir = str(run_copy)
    with pytest.raises(SetupError, match="init.workdir=.*do not fit this config's model") as info:
        train_and_evaluate(config, str(tmp_path / "new"))
    assert "\n" not in str(info.value) and not (tmp_path / "new").exists()


def test_num_steps_below_the_saved_step_is_refused(run_copy):
    before = _snapshot(run_copy)
    with pytest.raises(ConfigChangedError, match="num_steps=5 is below the step 20"):
        train_and_evaluate(tiny_config(num_steps=5), str(run_copy))
    assert _snapshot(run_copy) == before


def test_allowed_and_harmless_changes_resume(run_copy):
    """eval / logging / num_steps upwards resume; an explicitly allowed lr change too."""
    config = tiny_config(num_steps=24, log_every=4)
    config.eval.samplers = ("euler:1",)
    config.optim.lr = 1e-3
    summary = train_and_evaluate(config, str(run_copy), allow_config_change=("optim.lr",))
    assert summary["steps_run_this_session"] == 4 and summary["step"] == 24
    assert json.loads((run_copy / "config.json").read_text())["optim"]["lr"] == 1e-3


def test_allowed_shape_change_is_a_mismatch_not_corruption(run_copy):
    config = tiny_config()
    config.model.hidden = 32
    before = _snapshot(run_copy)
    with pytest.raises(CheckpointMismatchError, match="step 20.*another shape") as info:
        train_and_evaluate(config, str(run_copy), allow_config_change=True)
    assert _snapshot(run_copy) == before  # nothing moved aside, config.json kept
    # Its advice is only what works: not config.init.workdir, whose weights do not fit either.
    assert "use a new workdir" in str(info.value) and "init.workdir" not in str(info.value)
    # The read-only command reports the same and moves nothing either.
    (run_copy / "config.json").write_text(json.dumps(config.to_dict()))
    with pytest.raises(CheckpointMismatchError):
        load_run(str(run_copy))
    assert sorted(os.listdir(run_copy / "checkpoints")) == ["10", "20"]


# -- 2. silent corruption ---------------------------------------------------------------------
def test_bit_flip_in_a_checkpoint_falls_back_to_the_previous_one(run_copy, caplog):
    """Flipped bits in the largest data file of the newest checkpoint: restoring it used to
    succeed with a garbage array; now its checksum fails and step 10 is restored.

    One bit at each eighth of the file: part of an OCDBT data file is not array data (the
    restore never reads it, and where it lies changes from run to run), so a single flip at a
    fixed offset sometimes changes nothing restored. That every single-bit flip of an array
    changes its checksum is tested below."""
    _flip_bits(run_copy / "checkpoints" / "20")

    # The read-only command skips it (warning) and moves nothing.
    with caplog.at_level(logging.WARNING):
        _, _, _, step = load_run(str(run_copy))
    assert step == 10 and sorted(os.listdir(run_copy / "checkpoints")) == ["10", "20"]
    assert "step 20" in caplog.text  # a checksum mismatch, or unreadable where the flip hit
    assert "checksum mismatch" in caplog.text or "unreadable" in caplog.text  # compressed data
    assert "the checkpoint at step 10" in caplog.text and "bound method" not in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        summary = train_and_evaluate(tiny_config(num_steps=24), str(run_copy))
    assert "step 20" in caplog.text and "the checkpoint at step 10" in caplog.text
    assert summary["steps_run_this_session"] == 14
    assert len(os.listdir(run_copy / "checkpoints.unreadable")) == 1  # kept for inspection


def test_checksum_catches_every_single_bit_flip():
    """The checksum's first sum changes for a flip of any bit of any element (odd weights)."""
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 5))
    ref = np.asarray(ckpt_lib._leaf_checksum(x))
    bits = np.asarray(jax.lax.bitcast_convert_type(x, jnp.uint32))
    for i in range(bits.size):
        for b in (0, 13, 31):
            flipped = bits.copy().reshape(-1)
            flipped[i] ^= np.uint32(1 << b)
            y = jax.lax.bitcast_convert_type(jnp.asarray(flipped.reshape(bits.shape)), jnp.float32)
            assert np.asarray(ckpt_lib._leaf_checksum(y))[0] != ref[0], (i, b)


def test_nonfinite_loss_right_after_a_restore_blames_it_and_falls_back_once(run_copy, caplog):
    """A checkpoint that passes its checksums but holds infinite weights (e.g. corrupted in
    memory before it was saved): the first steps after restoring it are non-finite; the run
    moves it aside as the suspect and resumes from step 10 once."""
    config = tiny_config()
    exp = Experiment(config)
    ckpt = Checkpointer(str(run_copy / "checkpoints"), async_save=False)
    state, meta = ckpt.restore(20, exp.abstract_state())
    bad = state.replace(params=jax.tree.map(lambda p: p + jnp.inf, state.params))
    shutil.rmtree(run_copy / "checkpoints" / "20")
    ckpt.manager.reload()
    ckpt.save(20, bad, meta)
    ckpt.close()
    with caplog.at_level(logging.WARNING):
        summary = train_and_evaluate(tiny_config(num_steps=24), str(run_copy))
    assert "restoring the checkpoint at step 20: that checkpoint is the suspect" in caplog.text
    assert "falling back once to the checkpoint at step 10" in caplog.text
    assert summary["steps_run_this_session"] == 14 and summary["step"] == 24
    assert len(os.listdir(run_copy / "checkpoints.suspect")) == 1


def test_every_checkpoint_failing_verification_is_refused_until_start_over(run_copy, caplog):
    """Both checkpoints damaged: the start used to train again from step 0 and exit normally
    with warnings only. Now it refuses (one line naming --start_over), keeps refusing on the
    next start (the damaged checkpoints are moved aside, the directory is empty) and trains
    from step 0 only with start_over, keeping the moved checkpoints and the old metrics."""
    for step in ("10", "20"):
        _flip_bits(run_copy / "checkpoints" / step)
    config_json = (run_copy / "config.json").read_bytes()
    metrics = (run_copy / "metrics.jsonl").read_bytes()
    for _ in range(2):
        with pytest.raises(NoUsableCheckpointError, match="--start_over") as info:
            train_and_evaluate(tiny_config(), str(run_copy))
        assert "\n" not in str(info.value) and "failed verification" in str(info.value)
        assert os.listdir(run_copy / "checkpoints") == []
        assert len(os.listdir(run_copy / "checkpoints.unreadable")) == 2
        assert (run_copy / "config.json").read_bytes() == config_json
        assert (run_copy / "metrics.jsonl").read_bytes() == metrics
        assert not (run_copy / LOCK_NAME).exists()

    with caplog.at_level(logging.WARNING):
        summary = train_and_evaluate(tiny_config(), str(run_copy), start_over=True)
    assert summary["steps_run_this_session"] == 20 and not summary["preempted"]
    aside = sorted(os.listdir(run_copy / "checkpoints.unreadable"))
    assert len(aside) == 3 and aside[-1].startswith("metrics-")
    assert (run_copy / "checkpoints.unreadable" / aside[-1]).read_bytes() == metrics
    assert "starting over from step 0" in caplog.text


# -- 3. two writers ---------------------------------------------------------------------------
def test_a_live_lock_stops_a_second_writer_and_a_stale_one_is_taken_over(run_copy, caplog):
    lock = WorkdirLock(str(run_copy))
    holder = dict(lock.info, pid=os.getppid())  # a live process on this host
    (run_copy / LOCK_NAME).write_text(json.dumps(holder))
    before = _snapshot(run_copy)
    with pytest.raises(WorkdirLockedError, match=f"in use by pid {os.getppid()} on host"):
        train_and_evaluate(tiny_config(), str(run_copy))
    assert _snapshot(run_copy) == before

    dead = dict(lock.info, pid=2**22 + 12345)  # above the default pid_max: not alive
    (run_copy / LOCK_NAME).write_text(json.dumps(dead))
    with caplog.at_level(logging.WARNING), pytest.raises(ConfigChangedError):
        train_and_evaluate(tiny_config(num_steps=5), str(run_copy))  # refused after the lock
    assert "taking over the stale lock" in caplog.text
    assert not (run_copy / LOCK_NAME).exists()  # released on the way out


@pytest.mark.parametrize(
    "content",
    [b"", b'{"host": "vm", "pi', b"\x00" * 64, b'{"host": "vm", "pid": -1}', b"[1, 2]"],
    ids=["empty", "half-written", "zeros", "bad-pid", "not-an-object"],
)
def test_an_unreadable_lock_is_not_taken_over(run_copy, content):
    """A LOCK whose content cannot be read may belong to a live writer (on another host, or
    caught mid-write by an older version): it used to be taken over (two writers at once)."""
    (run_copy / LOCK_NAME).write_bytes(content)
    before = _snapshot(run_copy)
    with pytest.raises(WorkdirLockedError, match="cannot be read.*if none is, delete") as info:
        train_and_evaluate(tiny_config(), str(run_copy))
    assert "\n" not in str(info.value)
    assert _snapshot(run_copy) == before


def test_a_second_start_at_any_file_operation_of_the_first_never_makes_two_writers(tmp_path):
    """Fault injection at the granularity of file operations: whenever the first start opens,
    links or removes a file while LOCK exists, a second start tries to take the lock. Exactly
    one of them holds it at the end, and a refused one names the holder. (The lock used to be
    created empty and then written: a start reading it in between found it unreadable, took it
    over, and both ran.)"""
    first, second = WorkdirLock(str(tmp_path)), WorkdirLock(str(tmp_path))
    state = {"armed": False, "tries": 0, "refused": []}
    events = {"open", "os.link", "os.remove", "os.rename", "fcntl.flock"}

    def hook(event, _args):
        if not state["armed"] or event not in events or second.held:
            return
        if not (tmp_path / LOCK_NAME).exists():
            return
        state["armed"] = False  # no re-entry from the second start's own operations
        state["tries"] += 1
        try:
            second.acquire()
        except WorkdirLockedError as err:
            state["refused"].append(str(err))
        state["armed"] = True

    _install_audit_hook(hook)
    state["armed"] = True
    try:
        first.acquire()
    except WorkdirLockedError:
        pass
    finally:
        state["armed"] = False
    assert state["tries"] >= 1  # the second start did run inside the first one
    assert first.held + second.held == 1, state
    # The lock is never seen half-written: a refusal names its holder.
    assert all(f"in use by pid {os.getpid()}" in m for m in state["refused"]), state
    json.loads((tmp_path / LOCK_NAME).read_text())  # whole
    first.release(), second.release()
    assert os.listdir(tmp_path) == []


_AUDIT_HOOKS = []


def _install_audit_hook(fn):
    """Audit hooks cannot be removed: one dispatcher is installed per process, and the test's
    hook replaces the previous test's."""
    import sys

    if not _AUDIT_HOOKS:
        sys.addaudithook(lambda event, args: _AUDIT_HOOKS[-1](event, args))
    _AUDIT_HOOKS.append(fn)


def test_a_live_writer_in_this_process_is_not_stale_but_a_reused_pid_is(tmp_path, caplog):
    """The same pid is not proof the holder is gone (a notebook starting a second run while
    the first trains in a thread): its flock says it is alive. A recorded flock that no one
    holds any more proves its holder gone even though the pid is alive (reused)."""
    first = WorkdirLock(str(tmp_path))
    first.acquire()
    with pytest.raises(WorkdirLockedError, match=f"in use by pid {os.getpid()} on host"):
        WorkdirLock(str(tmp_path)).acquire()
    first.release()
    assert os.listdir(tmp_path) == []

    reused = dict(WorkdirLock(str(tmp_path)).info, pid=os.getppid(), flock=True)
    (tmp_path / LOCK_NAME).write_text(json.dumps(reused))
    with caplog.at_level(logging.WARNING):
        with WorkdirLock(str(tmp_path)) as lock:
            assert lock.held
    assert f"no process holds the flock of pid {os.getppid()}" in caplog.text


# -- 4. failed saves ---------------------------------------------------------------------------
def test_a_failed_async_save_stops_the_run_at_once_naming_the_path(tmp_path):
    """The checkpoint directory is replaced by a file mid-run: the save fails and the run stops
    with one line naming the directory and the cause, before the next save."""
    config = tiny_config(async_checkpoint=True, num_steps=40, log_every=2)
    ckpt_dir = tmp_path / "checkpoints"

    def break_at_11(step, batch):
        if step == 10:  # batch 10 is consumed by step 11, after the save at step 10 started
            os.rename(ckpt_dir, tmp_path / "moved_away")  # atomic, even mid-save
            ckpt_dir.write_text("not a directory")
        return batch

    seen = []

    def record(step, batch):
        seen.append(step)
        if step > 10:
            time.sleep(0.3)  # steps of a real model take this long: the failure shows meanwhile
        return break_at_11(step, batch)

    with pytest.raises(CheckpointSaveError, match=f"step 10 in {ckpt_dir} failed") as info:
        train_and_evaluate(config, str(tmp_path), data=_Wrapped(config, record))
    assert "\n" not in str(info.value) and "tensorstore_spec" not in str(info.value)
    assert max(seen) < 19  # stopped before the next save (step 20), at the next log


def test_partial_saves_and_surplus_checkpoints_are_cleaned_on_the_next_start(run_copy):
    """A kill -9 mid-save leaves ``*.orbax-checkpoint-tmp*``; one mid-deletion leaves more than
    keep_checkpoints steps. The next start removes both."""
    ckpts = run_copy / "checkpoints"
    shutil.copytree(ckpts / "10", ckpts / "30.orbax-checkpoint-tmp-1234")
    shutil.copytree(ckpts / "10", ckpts / "5")
    summary = train_and_evaluate(tiny_config(keep_checkpoints=2), str(run_copy))
    assert summary["steps_run_this_session"] == 0
    assert sorted(os.listdir(ckpts), key=int) == ["10", "20"]


def test_torn_and_garbage_metrics_lines_do_not_stop_a_resume(run_copy, caplog):
    """A kill or a full disk during an append leaves a torn last line; other damage leaves
    garbage lines. Every resume used to crash with a JSONDecodeError. Now the torn last line
    is dropped, the garbage is moved to metrics.jsonl.quarantine, every record is kept."""
    path = run_copy / "metrics.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    garbage = [b"not json at all\n", b"\x00" * 16 + b"\n", b"\xff\xfe{\n", b'"a string"\n']
    damaged = lines[:1] + garbage[:2] + lines[1:] + garbage[2:] + [b'{"step": 21, "train/lo']
    path.write_bytes(b"".join(damaged))
    with caplog.at_level(logging.WARNING):
        assert read_metrics(str(run_copy)) == [json.loads(ln) for ln in lines]
        summary = train_and_evaluate(tiny_config(), str(run_copy))
    assert summary["steps_run_this_session"] == 0
    assert (run_copy / "metrics.jsonl.quarantine").read_bytes() == b"".join(garbage)
    assert "dropped the torn last line" in caplog.text and "moved 4 unreadable line" in caplog.text
    repaired = path.read_bytes().splitlines(keepends=True)
    assert repaired[: len(lines)] == lines  # the old records, in order, then the new evaluation
    assert all(json.loads(ln)["step"] == 20 for ln in repaired[len(lines) :])


# -- 5. inputs --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "section, field, value, message",
    [
        ("train", "keep_checkpoints", 0, "train.keep_checkpoints=0: must be >= 1"),
        ("train", "num_steps", -5, "train.num_steps=-5: must be >= 1"),
        ("train", "checkpoint_every", -7, "train.checkpoint_every=-7: must be >= 0"),
        ("train", "log_every", 0, "train.log_every=0: must be >= 1"),
        ("train", "batch_size", 0, "train.batch_size=0: must be >= 1"),
        ("eval", "num_samples", 0, "eval.num_samples=0: must be >= 1"),
        ("eval", "samplers", ("euler",), "eval.samplers: eval sampler 'euler' must look like"),
        ("eval", "samplers", ("rk4:6",), "eval.samplers: rk4 costs 4 NFE per step"),
        ("eval", "samplers", ("euler:1|rk4:6",), "eval.samplers: rk4 costs 4 NFE per step"),
        ("eval", "samplers", ("euler:2@bogus",), "unknown sampler option 'bogus'"),
        ("train", "ema_decay", 1.5, r"train.ema_decay=1.5: expected a number in \[0, 1\)"),
    ],
)
def test_bad_values_are_refused_before_any_work(tmp_path, section, field, value, message):
    config = tiny_config()
    config[section][field] = value
    with pytest.raises(SetupError, match=message):
        train_and_evaluate(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_data_too_small_for_the_evaluation_is_refused_before_training(tmp_path):
    """Three rows hold out one (ceil(0.1 * 3)): the kernel distances need two. Such a run used
    to train to the end and then crash in its final evaluation; now it stops at set-up, one
    line, nothing written. The same for a points evaluation of one sample, and for data
    without a training row."""
    rng = np.random.default_rng(0)
    three, empty = tmp_path / "three.npz", tmp_path / "empty.npz"
    np.savez(three, x=rng.normal(size=(3, 2)).astype(np.float32))
    np.savez(empty, x=np.zeros((0, 2), np.float32))
    cases = [
        ({"data.path": str(three)}, r"'three' \(.*three.npz\) has 1 held-out example\(s\); "),
        ({"data.path": str(three), "data.eval_fraction": 0.5}, None),  # 2 held out: accepted
        ({"data.path": str(empty), "data.eval_path": str(three)}, "has no training example"),
        (
            {"data.path": str(three), "data.eval_fraction": 0.5, "eval.num_samples": 1},
            "eval.num_samples=1: must be >= 2",
        ),
    ]
    for overrides, message in cases:
        config = tiny_config()
        config.data.kind = "array"
        for field, value in overrides.items():
            section, name = field.split(".")
            config[section][name] = value
        if message is None:
            exp = Experiment(config)
            check_data_size(exp.data, config)  # the set-up check passes (no training here)
            continue
        with pytest.raises(SetupError, match=message) as info:
            train_and_evaluate(config, str(tmp_path / "w"))
        assert "\n" not in str(info.value) and not (tmp_path / "w").exists()


def test_bad_paths_are_refused_and_tilde_is_expanded(tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(SetupError, match="is a file; pass a directory"):
        train_and_evaluate(tiny_config(), str(afile))
    config = tiny_config()
    config.data.data_dir = str(afile)
    with pytest.raises(SetupError, match="data.data_dir=.*is a file"):
        train_and_evaluate(config, str(tmp_path / "w"))
    (tmp_path / "w2").mkdir()
    (tmp_path / "w2" / "checkpoints").write_text("x")
    with pytest.raises(SetupError, match="checkpoints is a file"):
        train_and_evaluate(tiny_config(), str(tmp_path / "w2"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert prepare_workdir("~/x") == str(tmp_path / "home" / "x")
    assert (tmp_path / "home" / "x").is_dir() and not os.path.exists("~")


def test_broken_config_json_is_named(run_copy):
    (run_copy / "config.json").write_text("{not json")
    with pytest.raises(SetupError, match=f"cannot parse {run_copy / 'config.json'}"):
        train_and_evaluate(tiny_config(), str(run_copy))
    with pytest.raises(SetupError, match=f"cannot parse {run_copy / 'config.json'}"):
        load_run(str(run_copy))


# -- 8. smaller --------------------------------------------------------------------------------
def test_first_log_after_a_resume_averages_the_uninterrupted_window(finished_run, tmp_path):
    """Stopped at step 7 (mid-window of log_every=5): the log at step 10 after the resume is
    the mean over steps 6-10, as in the uninterrupted run, not over 8-10."""
    import signal

    config = tiny_config()

    def sigterm_at_7(step, batch):
        if step == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return batch

    train_and_evaluate(config, str(tmp_path), data=_Wrapped(config, sigterm_at_7))
    train_and_evaluate(config, str(tmp_path))
    straight = {r["step"]: r for r in read_metrics(str(finished_run)) if "train/loss" in r}
    resumed = {r["step"]: r for r in read_metrics(str(tmp_path)) if "train/loss" in r}
    assert sorted(resumed) == [5, 10, 15, 20]
    for step in resumed:
        assert resumed[step]["train/loss"] == straight[step]["train/loss"], step


# -- 9. issue 23: bad optimizer values, fine-tunes without their inputs, what a fine-tune starts
# from ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("b2", 2.0, r"optim.b2=2.0: expected a finite number in \[0, 1\)"),
        ("b1", -0.1, r"optim.b1=-0.1: expected a finite number in \[0, 1\)"),
        ("b2", 1.0, r"optim.b2=1.0: expected a finite number in \[0, 1\)"),
        ("eps", -1.0, "optim.eps=-1.0: expected a finite number > 0"),
        ("eps", 0.0, "optim.eps=0.0: expected a finite number > 0"),
        ("grad_clip", -1.0, "optim.grad_clip=-1.0: expected a finite number >= 0"),
        ("weight_decay", -0.01, "optim.weight_decay=-0.01: expected a finite number >= 0"),
        ("lr", float("nan"), "optim.lr=nan: expected a finite number >= 0"),
        ("final_lr_fraction", 1.5, r"optim.final_lr_fraction=1.5: .* in \[0, 1\]"),
        ("warmup_steps", -1, "optim.warmup_steps=-1: must be >= 0"),
        ("name", "sgd", r"optim.name='sgd': choose one of \('adamw', 'adam'\)"),
        ("schedule", "linear", r"optim.schedule='linear': choose one of"),
    ],
)
def test_bad_optimizer_values_are_refused_before_any_work(tmp_path, field, value, message):
    config = tiny_config()
    config.optim[field] = value
    with pytest.raises(SetupError, match=message):
        train_and_evaluate(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_optimizer_values_on_the_edges_of_their_ranges_are_accepted():
    from flowjax.training.validate import validate_config

    config = tiny_config()
    config.optim.update(
        dict(lr=0.0, b1=0.0, b2=0.0, eps=1e-30, weight_decay=0.0, grad_clip=0.0, warmup_steps=0)
    )
    config.optim.final_lr_fraction = 1.0
    assert validate_config(config).optim.to_dict() == config.optim.to_dict()


def _shrunk(name):
    from flowjax.config_files import load_config

    config = load_config(name)
    config.model.hidden, config.model.depth = 16, 1
    config.train.batch_size, config.train.progress = 32, False
    return config


def test_a_fine_tune_without_its_pairs_or_teacher_is_refused_and_writes_nothing(tmp_path):
    """Reflow without data.pairs_dir, and a run whose init.workdir holds no run: one-line
    SetupErrors at set-up; the workdir the refused run created is gone, one that existed
    before it stays (empty, as it was)."""
    with pytest.raises(SetupError, match=r"\['x0', 'x1'\] .* set config.data.pairs_dir"):
        train_and_evaluate(_shrunk("toy2d_reflow"), str(tmp_path / "reflow"))
    assert not (tmp_path / "reflow").exists()
    config = _shrunk("toy2d_freeflow")
    config.init.workdir = str(tmp_path / "no_teacher")
    for workdir in (tmp_path / "new", tmp_path / "existing"):
        if workdir.name == "existing":
            workdir.mkdir()
        with pytest.raises(SetupError, match=f"config.init.workdir: {tmp_path / 'no_teacher'}"):
            train_and_evaluate(config, str(workdir))
    assert not (tmp_path / "new").exists() and os.listdir(tmp_path / "existing") == []


def test_a_fine_tune_reports_the_scores_of_the_weights_it_started_from(finished_run, tmp_path):
    """A run started from another run's weights (init.workdir) reports them as 'initial',
    scored with every eval sampler: the same weights under the same evaluation as the
    teacher's own 'final' (its EMA weights, which init.workdir loads), so the two agree;
    the zero-network 'untrained' baseline is not reported for it."""
    teacher = json.loads((finished_run / "summary.json").read_text())
    config = tiny_config(num_steps=2)
    config.init.workdir = str(finished_run)
    summary = train_and_evaluate(config, str(tmp_path / "tuned"))
    assert "untrained" not in summary and set(summary["initial"]) == set(teacher["final"])
    # One program (the evaluator's sampler and metrics) compiled twice on the same inputs:
    # equal up to compilation order; the zero network differs by 0.5% (sw) to 12% (mmd).
    for key, value in teacher["final"].items():
        np.testing.assert_allclose(summary["initial"][key], value, rtol=1e-4, err_msg=key)
    on_disk = json.loads((tmp_path / "tuned" / "summary.json").read_text())
    assert on_disk["initial"] == summary["initial"]
