"""What a user sees: the progress bar's rate leaves out the compiling first step; bars are quiet
off a terminal; the command lines drop JAX's backend-probe line and nothing else."""

import io
import logging
import os
import subprocess
import sys

import pytest
from tqdm import tqdm

from flowjax import console

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _run(bar_cls, clock, compile_s=100.0, step_s=0.5, steps=20):
    """A 100-step job from step 10: the first step takes ``compile_s``, the next ``step_s``."""
    bar = bar_cls(total=100, initial=10, file=io.StringIO(), mininterval=0, smoothing=0)
    bar._time = clock  # tqdm reads its clock through this attribute
    bar.start_t = bar.last_print_t = clock()
    clock.now += compile_s
    bar.update(1)
    for _ in range(steps - 1):
        clock.now += step_s
        bar.update(1)
    return bar


def _rate_and_eta(bar):
    d = bar.format_dict
    rate = d["rate"] or (d["n"] - d["initial"]) / d["elapsed"]
    return rate, (d["total"] - d["n"]) / rate


def test_step_bar_rate_and_eta_leave_out_the_first_step():
    clock = _Clock()
    bar = _run(console.StepBar, clock)
    rate, eta = _rate_and_eta(bar)
    assert bar.n == 30
    assert rate == pytest.approx(2.0)  # 19 steps in 9.5 s: the compile is not in it
    assert eta == pytest.approx(70 * 0.5)
    assert "30/100" in str(bar)
    # a plain tqdm bar counts the compile in: 20 steps in 109.5 s
    plain_rate, plain_eta = _rate_and_eta(_run(tqdm, _Clock()))
    assert plain_rate == pytest.approx(20 / 109.5)
    assert plain_eta > 10 * eta


def test_step_bar_with_moving_average_also_leaves_out_the_first_step():
    clock = _Clock()
    bar = console.StepBar(total=100, file=io.StringIO(), mininterval=0, smoothing=0.3)
    bar._time = clock
    bar.start_t = bar.last_print_t = clock()
    clock.now += 60.0
    bar.update(1)
    for _ in range(5):
        clock.now += 0.25
        bar.update(1)
    assert bar.format_dict["rate"] == pytest.approx(4.0)


def test_progress_bar_is_quiet_off_a_terminal_unless_asked(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    assert console.progress_bar(5, desc="x").disable
    assert not console.progress_bar(5, desc="x", enabled=True).disable
    assert console.progress_bar(5, desc="x", enabled=False).disable
    assert isinstance(console.progress_bar(5, desc="x", first_step_compiles=True), console.StepBar)


def test_setup_logging_drops_only_the_backend_probe_line():
    console.setup_logging()
    logger = logging.getLogger("jax._src.xla_bridge")
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        logger.info("Unable to initialize backend 'tpu': INTERNAL: no libtpu")
        logger.warning("Unable to initialize backend 'cuda': a real failure")
        logger.info("another message")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    # handlers on the logger itself see records its filters pass
    assert seen == ["Unable to initialize backend 'cuda': a real failure", "another message"]


def test_command_line_start_prints_no_backend_probe_line():
    code = (
        "from flowjax import console; console.setup_logging(); "
        "import jax; jax.devices(); import logging; logging.getLogger('flowjax').info('ready')"
    )
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert "ready" in out.stderr
    assert "Unable to initialize backend" not in out.stderr


def test_command_lines_print_info_lines_only_when_asked():
    # An absl command line as flowjax's are: setup_logging first in main, then some logging.
    code = (
        "import logging\n"
        "from absl import app\n"
        "from flowjax import console\n"
        "def main(argv):\n"
        "    console.setup_logging()\n"
        "    logging.getLogger('flowjax.x').info('an info line')\n"
        "    logging.getLogger('flowjax.x').warning('a warning')\n"
        "app.run(main)\n"
    )

    def stderr(*args):
        env = dict(os.environ, PYTHONPATH=REPO)
        run = [sys.executable, "-c", code, *args]
        return subprocess.run(run, env=env, capture_output=True, text=True, check=True).stderr

    quiet = stderr()
    assert "a warning" in quiet and "an info line" not in quiet
    for asked in (["-v", "0"], ["--verbosity=0"]):
        assert "an info line" in stderr(*asked)
