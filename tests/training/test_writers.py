"""TensorBoard output: scalars (with the learning rate), the config text and the sample figure,
read back from the event files; the writer without tensorboardX; the job's event file."""

import glob
import io
import json
import math
import os
import struct
import sys

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboardX.proto import event_pb2

from flowjax.training import read_metrics, train_and_evaluate
from flowjax.training.writers import MetricWriter


def read_events(workdir) -> dict[str, list]:
    """``tag -> [(step, value)]`` of every event file under ``workdir/tensorboard``: scalars
    as floats, text as str, images as the decoded uint8 array (record framing: u64 length,
    u32 crc, payload, u32 crc)."""
    out: dict[str, list] = {}
    for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.out.*"))):
        with open(path, "rb") as f:
            raw = f.read()
        pos = 0
        while pos < len(raw):
            (length,) = struct.unpack("<Q", raw[pos : pos + 8])
            event = event_pb2.Event.FromString(raw[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                if v.HasField("image"):
                    value = np.asarray(Image.open(io.BytesIO(v.image.encoded_image_string)))
                elif v.HasField("tensor") and v.tensor.string_val:
                    value = v.tensor.string_val[0].decode()
                else:
                    value = v.simple_value
                out.setdefault(v.tag.split("/text_summary")[0], []).append((event.step, value))
    return out


def test_writer_puts_scalars_text_and_image_in_the_event_file(tmp_path):
    png = tmp_path / "figure.png"
    pixels = np.zeros((6, 10, 3), np.uint8)
    pixels[2:4, 3:7] = (255, 0, 0)
    Image.fromarray(pixels).save(png)
    writer = MetricWriter(str(tmp_path))
    assert writer.tensorboard
    writer.write_config({"optim": {"lr": 0.002}, "seed": 3}, 0)
    writer.write(5, {"train/loss": 0.5, "train/lr": 1e-3})
    writer.write_image("samples", str(png), 5)
    writer.close()

    events = read_events(str(tmp_path))
    assert events["train/lr"] == [(5, pytest.approx(1e-3))]
    assert events["train/loss"] == [(5, pytest.approx(0.5))]
    (step, text), *_ = events["config"]
    assert step == 0 and json.loads(text.replace("\n    ", "\n")) == {
        "optim": {"lr": 0.002},
        "seed": 3,
    }
    (step, image), *_ = events["samples"]
    assert step == 5 and image.shape == (6, 10, 3)
    np.testing.assert_array_equal(image, pixels)


def test_writer_without_tensorboardx_writes_metrics_only(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if it were not installed
    writer = MetricWriter(str(tmp_path))
    assert not writer.tensorboard
    writer.write_config({"seed": 0}, 0)
    writer.write(1, {"train/loss": 1.0})
    writer.close()
    assert read_metrics(str(tmp_path)) == [{"step": 1, "train/loss": 1.0}]
    assert not os.path.exists(tmp_path / "tensorboard")


@pytest.mark.slow
def test_job_logs_lr_config_and_sample_figures(tmp_path, make_config):
    """A short job: the learning rate at each logged step is the cosine-with-warmup rate optax
    applied in that step's update (closed form), and each evaluation leaves a figure. The
    viewer installed with the package (tensorboard's own reader, which drops a tag's later
    points when a smaller step arrives) shows every evaluation and the untrained network's
    scores of ``summary.json`` as a line from step 0 to the end."""
    config = make_config(tensorboard=True, eval_every=10)
    summary = train_and_evaluate(config, str(tmp_path))
    ocfg, total = config.optim, config.train.num_steps
    lr, warm, floor = ocfg.lr, ocfg.warmup_steps, ocfg.final_lr_fraction

    def expected(step):  # update number `step` uses optax count step - 1
        k = step - 1
        if k < warm:
            return lr * k / warm
        frac = (k - warm) / (total - warm)
        return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac)))

    records = {r["step"]: r for r in read_metrics(str(tmp_path)) if "train/lr" in r}
    assert sorted(records) == [5, 10, 15, 20]
    for step, r in records.items():
        assert r["train/lr"] == pytest.approx(expected(step), rel=1e-6), step
    events = read_events(str(tmp_path))
    assert [s for s, _ in events["train/lr"]] == [5, 10, 15, 20]
    assert [s for s, _ in events["samples"]] == [10, 20]
    assert events["samples"][0][1].ndim == 3
    assert json.loads(events["config"][0][1].replace("\n    ", "\n"))["optim"]["lr"] == lr

    viewer = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0})
    viewer.Reload()
    assert summary["untrained"]
    for key, value in summary["untrained"].items():
        points = viewer.Scalars(f"untrained/{key}")
        assert [p.step for p in points] == [0, total]
        assert [p.value for p in points] == pytest.approx([value, value], rel=1e-6)
    for key in summary["final"]:
        assert [p.step for p in viewer.Scalars(f"eval/{key}")] == [10, total]
