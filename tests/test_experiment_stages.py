"""experiments/stages.py: a finished stage is skipped on a rerun, a preempted one is not."""

import importlib.util
import os

import pytest

_PATH = os.path.join(os.path.dirname(__file__), os.pardir, "experiments", "stages.py")
_spec = importlib.util.spec_from_file_location("experiment_stages", _PATH)
stages = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stages)


def test_a_preempted_stage_stops_the_script_and_resumes_on_the_next_run(tmp_path):
    calls = []

    def train(preempted):
        def fn(workdir):
            calls.append(workdir)
            return {"preempted": preempted}

        return fn

    with pytest.raises(SystemExit) as stop:
        stages.Stages(str(tmp_path)).run("fit", train(True))
    assert stop.value.code == 143
    assert "fit" not in stages.Stages(str(tmp_path)).times  # not marked done
    runner = stages.Stages(str(tmp_path))
    runner.run("fit", train(False))  # the rerun trains (resumes) the stage
    assert len(calls) == 2 and "fit" in stages.Stages(str(tmp_path)).times
    stages.Stages(str(tmp_path)).run("fit", train(False))  # finished: skipped
    assert len(calls) == 2
