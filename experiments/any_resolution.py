"""Any-resolution transformers on digits of mixed sizes: FiTv2 and Next-DiT against the DiT
(ALGORITHMS §13-§14, docs/maths/any_resolution.md).

Claims tested (the papers'), at the scale of a 2-core CPU:

1. FiTv2 / Lumina-Next: a transformer trained on images of mixed sizes and aspect ratios (token
   sequences with a padding mask, 2-D RoPE) samples non-square sizes much better than a DiT of
   the same size trained on squares (FiT's DiT-B ablation: FID 50.5 vs 91.3 at 160x320);
2. beyond the training grid, the decoupled rules (VisionNTK, VisionYaRN) extrapolate best for
   FiTv2, and the time-aware rules (the released time switch, the time-aware form) for
   Next-DiT; plain RoPE and PI do worse.

    python experiments/any_resolution.py                  # the full run (see below for its time)
    python experiments/any_resolution.py --quick          # a smoke run of every stage
    python experiments/any_resolution.py --summarise_only # re-print / re-plot the stored JSON

Runs (each a normal flowjax run in ``--workdir/<full|quick>/<name>``, skipped when done, so a
second call only scores; ``--retrain`` trains again), the same steps, batch, optimiser and
time law (the FiTv2 config's) for all three, parameters matched within 10%:

- ``fitv2``: ``configs/digits_fitv2.py`` (digits at mixed sizes and aspect ratios as token
  batches, the sizes of :data:`TRAIN_SIZES`);
- ``nextdit``: ``configs/digits_nextdit.py`` on the same data at FiTv2's width, depth and
  heads, its SwiGLU multiplier chosen so its parameter count is closest to FiTv2's;
- ``dit``: ``configs/digits_dit.py`` trained on the digits resized to one square,
  :data:`DIT_SIZE` (the flexible models' largest grid, ``train_grid``), with the sin-cos
  table at the sampled size; at FiTv2's width, depth and heads, its MLP ratio chosen so its
  parameter count is closest to FiTv2's.

Scoring (the feature space, stated): every sample of a size ``H x W`` is resized to 8x8
(Pillow bicubic, which low-passes when shrinking) and embedded by the digits classifier
(:class:`flowjax.evaluation.digits_features.DigitsFeatureExtractor`, trained on the 8x8
digits); the Fréchet distance is taken against the held-out test digits pushed through the
same round trip (upsampled to ``H x W`` as the training data is, then back to 8x8), so the
resizing itself costs a perfect model nothing. The same noise and the same class-balanced
labels are used for every model at a size; ``real`` rows score training digits through the
round trip (the finite-sample floor at this number of samples). Sizes: in-distribution
(:data:`IN_SIZES`), unseen aspect ratios (:data:`UNSEEN_ASPECT`, a side beyond the training
grid) and 1.5x / 2x the training grid per side (:data:`LARGER`), each beyond-grid size with
every extrapolation rule of the model (:data:`RULES`); inside the grid every rule is plain
RoPE. Euler, uniform grid, ``--nfe`` steps, classifier-free guidance at the config's scale.

Writes ``results/experiments/any_resolution.json`` and ``any_resolution.png`` (samples at
trained and unseen sizes).

Measured (1500 steps each, 0.28M parameters, 250 samples, Euler 8, CFG 2; 16 min on this
2-core CPU at a load average of ~2, 29 min at ~5): claim 1 reproduced, claim 2 not. At the
non-square training sizes FiTv2 / Next-DiT reach FD 45.6 / 55.4 (12x16) and 73.9 / 79.9
(16x8) against 98.0 and 342.9 for the DiT, at unseen 1:3 and 3:1 sizes 133-199 against
405-427; on its own 16x16 square the DiT is better (37.8 vs 58.3 / 63.2). Beyond the grid PI
is the best rule for both models at every size (FiTv2 93.4 at 1.5x and 138.7 at 2x, plain
RoPE 233.8 and 262.2); NTK, VisionNTK, YaRN and VisionYaRN stay near plain RoPE; Next-DiT's
released time switch is second (162.9, 187.8), its inferred frequency- and time-aware forms no
better than plain. Tables and discussion: docs/results/any_resolution.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import jax
import numpy as np
import stages  # experiments/stages.py: the script's directory is on the path

import flowjax
from flowjax.config_files import data_section, load_config
from flowjax.console import progress_bar
from flowjax.data.digits_arrays import load_digits_numpy
from flowjax.data.mixed_sizes import DigitsMixedSource
from flowjax.data.tokens import resize_bicubic
from flowjax.evaluation.digits_features import DigitsFeatureExtractor
from flowjax.models import init_params, make_apply_fn, make_model
from flowjax.solvers import make_sampler, make_solver
from flowjax.training import train_and_evaluate
from flowjax.training.experiment import load_run
from flowjax.velocity import make_velocity_fn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "results", "experiments")
PATCH = 2
TRAIN_GRID = 8  # tokens per side of the largest training size (16 px at patch 2)
#: Training sizes (H, W) in pixels of the flexible models: sides 8, 12, 16 px, every pair.
TRAIN_SIZES = tuple((h, w) for h in (8, 12, 16) for w in (8, 12, 16))
WIDTH, DEPTH, HEADS = 64, 4, 4  # every model (the configs' 96 is too slow for this budget)
DIT_SIZE = (16, 16)  # the DiT's one square (the flexible models' largest grid)
IN_SIZES = ((16, 16), (12, 16), (16, 8))  # seen in training by the flexible models
UNSEEN_ASPECT = ((8, 24), (24, 8))  # 1:3 and 3:1 (never seen; a side beyond the grid)
LARGER = ((24, 24), (32, 32))  # 1.5x and 2x the training grid per side
RULES = {
    "fitv2": ("rope", "pi", "ntk", "visionntk", "yarn", "visionyarn"),
    "nextdit": ("rope", "pi", "ntk", "time_switch", "frequency_aware", "time_aware"),
    "dit": ("sincos",),
}
FIGURE_RULE = {"fitv2": "visionyarn", "nextdit": "time_aware", "dit": "sincos"}  # the papers'


# ---------------------------------------------------------------------------------------------
# Images at a size and back
# ---------------------------------------------------------------------------------------------


def resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """``images [N, h, w, 1]`` floats in [-1, 1] -> ``[N, height, width, 1]`` float32, Pillow
    bicubic per image (:func:`flowjax.data.tokens.resize_bicubic`, low-passing when shrinking),
    clipped to [-1, 1]."""
    x = np.clip(np.asarray(images, np.float32), -1.0, 1.0)
    return np.clip(np.stack([resize_bicubic(im, height, width) for im in x]), -1.0, 1.0)


def to_unit(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 127.5 - 1.0


# ---------------------------------------------------------------------------------------------
# The three runs
# ---------------------------------------------------------------------------------------------


def count_params(config) -> int:
    """Parameters of the config's model (from shapes only: nothing is initialised)."""
    model = make_model(config.model, num_classes=10)
    shapes = jax.eval_shape(
        lambda key: init_params(model, key, (*DIT_SIZE, 1), 10), jax.random.PRNGKey(0)
    )
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(shapes)))


def shared_training(config, reference) -> None:
    """Give ``config`` the reference run's steps, batch, optimiser, EMA, time law and guidance."""
    config.train.num_steps = reference.train.num_steps
    config.train.batch_size = reference.train.batch_size
    config.train.ema_decay = reference.train.ema_decay
    config.optim = reference.optim
    config.objective.time_sampler = reference.objective.time_sampler
    config.objective.label_dropout = reference.objective.label_dropout
    config.eval.cfg_scale = reference.eval.cfg_scale


def closest(candidates, target: int):
    """The ``(config, params)`` of ``candidates`` whose parameter count is closest to
    ``target``."""
    counted = [(c, count_params(c)) for c in candidates]
    return min(counted, key=lambda cn: abs(cn[1] - target))


def dit_data(workdir: str) -> tuple[str, str]:
    """The digits resized to :data:`DIT_SIZE` as ``.npz`` files (train, test) for the DiT."""
    os.makedirs(workdir, exist_ok=True)
    paths = []
    for split in ("train", "test"):
        path = os.path.join(workdir, f"digits_{DIT_SIZE[0]}x{DIT_SIZE[1]}_{split}.npz")
        if not os.path.exists(path):
            images, labels = load_digits_numpy(split)
            x = np.stack([resize_bicubic(im, *DIT_SIZE) for im in images])  # as digits_mixed
            np.savez(path, x=to_unit(x), label=labels.astype(np.int32))
        paths.append(path)
    return paths[0], paths[1]


def flexible(name: str, **model):
    """The digits config of a flexible model on :data:`TRAIN_SIZES` (sampling up to 2x)."""
    c = load_config(f"digits_{name}")
    c.data.update(sizes=TRAIN_SIZES, max_tokens=TRAIN_GRID**2, eval_size=DIT_SIZE)
    c.model.update(hidden_size=WIDTH, depth=DEPTH, num_heads=HEADS, train_grid=TRAIN_GRID)
    if name == "fitv2":  # the published ratio: rank 288 at width 1152
        c.model.lora_rank = WIDTH // 4
    c.model.update(max_tokens=(2 * TRAIN_GRID) ** 2, **model)
    return c


def make_configs(steps: int, data_dir: str) -> dict:
    """The three runs' configs (FiTv2's sets the shared training settings)."""
    fit = flexible("fitv2")
    fit.train.num_steps = steps
    target = count_params(fit)
    width = dict(hidden_size=WIDTH, depth=DEPTH, num_heads=HEADS)
    nexts = []
    for multiplier in np.arange(0.5, 3.01, 0.125):  # the SwiGLU width sets the parameters
        c = flexible("nextdit", ffn_dim_multiplier=float(multiplier), multiple_of=8)
        shared_training(c, fit)
        nexts.append(c)
    nextdit, _ = closest(nexts, target)

    train_path, test_path = dit_data(data_dir)
    dits = []
    for ratio in np.arange(1.0, 6.01, 0.25):
        c = load_config("digits_dit")
        c.data = data_section("array", "digits_square", path=train_path, eval_path=test_path)
        c.model.update(mlp_ratio=float(ratio), **width)
        shared_training(c, fit)
        dits.append(c)
    dit, _ = closest(dits, target)
    configs = dict(fitv2=fit, nextdit=nextdit, dit=dit)
    for c in configs.values():  # the run's own final check is cheap; scoring is below
        c.train.eval_every = 0
        c.train.checkpoint_every = 0
        c.eval.samplers = ("euler:4",)
        c.eval.num_samples = 64
    return configs


class Stages(stages.Stages):
    def train(self, name: str, config) -> str:
        return self.run(name, lambda workdir: train_and_evaluate(config, workdir))


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


def cells(quick: bool) -> list[tuple[str, tuple[int, int]]]:
    """``(group, (H, W))`` of every size scored."""
    out = [("in-distribution", s) for s in IN_SIZES]
    out += [("unseen aspect", s) for s in UNSEEN_ASPECT]
    out += [(f"{s[0] / (PATCH * TRAIN_GRID):g}x grid", s) for s in LARGER]
    return out[:1] + out[3:4] + out[-1:] if quick else out


def beyond_grid(size: tuple[int, int]) -> bool:
    return max(size) > PATCH * TRAIN_GRID


class Scorer:
    """Samples a trained run at a size with a position rule and scores the samples.

    The reference at a size is the test digits upsampled to it exactly as ``digits_mixed``
    makes its training images, then resized to 8x8 like the samples (the round trip)."""

    def __init__(self, num_samples: int, nfe: int, seed: int = 0):
        self.n, self.nfe, self.seed = num_samples, nfe, seed
        self.extractor = DigitsFeatureExtractor.load_or_train()
        self.digits = DigitsMixedSource(batch_size=1, seed=0, sizes=TRAIN_SIZES, max_tokens=None)
        self.labels = np.arange(num_samples, dtype=np.int32) % 10
        self._reference = {}

    def round_trip(self, split: str, size) -> np.ndarray:
        """A split's digits upsampled to ``size`` (uint8, as the training data) and back to 8x8."""
        return resize(to_unit(self.digits.upsampled(split, size)), 8, 8)

    def reference(self, size):
        if size not in self._reference:
            self._reference[size] = self.extractor.statistics(self.round_trip("test", size))
        return self._reference[size]

    def real(self, size) -> float:
        """FD of ``n`` training digits through the round trip (the floor at ``n``)."""
        train = self.round_trip("train", size)
        rows = np.random.RandomState(self.seed).choice(len(train), self.n, replace=False)
        return self.extractor.frechet(train[rows], self.reference(size))

    def noise(self, size):
        key = jax.random.fold_in(jax.random.PRNGKey(self.seed), size[0] * 1000 + size[1])
        return jax.random.normal(key, (self.n, *size, 1), np.float32)

    def sample(self, exp, params, rule: str, size) -> np.ndarray:
        model = exp.model if rule == "sincos" else exp.model.clone(rope=rule)
        velocity = make_velocity_fn(
            make_apply_fn(model),
            num_classes=exp.num_classes,
            cfg_scale=float(exp.config.eval.cfg_scale),
        )
        run = make_sampler(make_solver("euler"), velocity, np.linspace(0.0, 1.0, self.nfe + 1))
        return np.asarray(run(params, self.noise(size), self.labels))

    def score(self, samples, size) -> float:
        return self.extractor.frechet(resize(samples, 8, 8), self.reference(size))


def score_run(scorer: Scorer, name: str, workdir: str, sizes, bar) -> tuple[dict, dict]:
    """FD of one run at every size and rule, and a few samples per (size, rule) for the figure."""
    _, exp, params, step = load_run(workdir)
    rows, shown = {}, {}
    for group, size in sizes:
        rules = RULES[name] if beyond_grid(size) else RULES[name][:1]
        for rule in rules:
            t0 = time.perf_counter()
            samples = scorer.sample(exp, params, rule, size)
            fd = scorer.score(samples, size)
            key = f"{size[0]}x{size[1]}"
            rows.setdefault(key, dict(group=group, fd={}))["fd"][rule] = fd
            shown[(key, rule)] = samples[:8, ..., 0]
            bar.set_postfix_str(
                f"{name} {key} {rule} FD {fd:.1f} ({time.perf_counter() - t0:.0f} s)"
            )
            bar.update(1)
    return dict(step=step, sizes=rows), shown


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def print_table(result: dict) -> None:
    """One line per (size, run): the real-data floor, then FD under each rule."""
    print(
        f"\nFréchet distance (digits classifier, samples resized to 8x8), "
        f"{result['num_samples']} samples, Euler {result['nfe']}; 'real': training digits"
    )
    print(f"{'size':7s} {'group':15s} {'real':>5s}  {'run':8s} FD per rule")
    for key, floor in result["real"].items():
        for name, run in result["runs"].items():
            row = run["sizes"].get(key)
            if row is not None:
                fds = "  ".join(f"{rule}={fd:.1f}" for rule, fd in row["fd"].items())
                print(f"{key:7s} {row['group']:15s} {floor:5.1f}  {name:8s} {fds}")


def markdown_tables(result: dict) -> str:
    """The results page's tables: every run at every size with plain RoPE (the DiT: its sin-cos
    table), then each flexible run's rules at the sizes beyond its training grid."""
    names = [n for n in ("fitv2", "nextdit", "dit") if n in result["runs"]]
    runs = result["runs"]
    lines = ["| size (H x W px) | group | real digits | " + " | ".join(names) + " |"]
    lines.append("|---" * (3 + len(names)) + "|")
    for key, floor in result["real"].items():
        group = next(r["sizes"][key]["group"] for r in runs.values() if key in r["sizes"])
        cells = [f"{next(iter(runs[n]['sizes'][key]['fd'].values())):.1f}" for n in names]
        lines.append(f"| {key} | {group} | {floor:.1f} | " + " | ".join(cells) + " |")
    for name in names[:2]:
        rules = RULES[name]
        lines += ["", f"| {name}: size | " + " | ".join(rules) + " |"]
        lines.append("|---" * (1 + len(rules)) + "|")
        for key, row in runs[name]["sizes"].items():
            if len(row["fd"]) > 1:
                lines.append(
                    f"| {key} | " + " | ".join(f"{row['fd'][r]:.1f}" for r in rules) + " |"
                )
    return "\n".join(lines)


def plot(result: dict, shown: dict, path: str) -> None:
    """Samples of each run (rows) at each size (columns) under the papers' preferred rule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["runs"])
    keys = list(result["real"])
    fig, axes = plt.subplots(
        len(names), len(keys), figsize=(2.1 * len(keys), 2.3 * len(names)), squeeze=False
    )
    for i, name in enumerate(names):
        for j, key in enumerate(keys):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            rule = FIGURE_RULE[name] if (key, FIGURE_RULE[name]) in shown[name] else None
            rule = rule or next((r for k, r in shown[name] if k == key), None)
            if rule is None:
                ax.set_axis_off()
                continue
            ims = np.pad(shown[name][(key, rule)][:4], ((0, 0), (0, 1), (0, 1)), constant_values=1)
            tile = np.concatenate(
                [np.concatenate(list(pair), axis=1) for pair in ims.reshape(2, 2, *ims.shape[1:])],
                axis=0,
            )
            ax.imshow(tile, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            fd = result["runs"][name]["sizes"][key]["fd"][rule]
            ax.set_title(f"{name} {key}\n{rule}: FD {fd:.1f}", fontsize=7)
    fig.suptitle(
        f"Digits at trained sizes (sides 8-16 px) and beyond; {result['steps']} steps each",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def save_shown(path: str, shown: dict) -> None:
    flat = {f"{name}|{key}|{rule}": v for name, d in shown.items() for (key, rule), v in d.items()}
    np.savez_compressed(path, **flat)


def load_shown(path: str) -> dict:
    shown: dict = {}
    with np.load(path) as f:
        for k in f.files:
            name, key, rule = k.split("|")
            shown.setdefault(name, {})[(key, rule)] = f[k]
    return shown


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir", default=os.path.join(tempfile.gettempdir(), "flowjax_any_resolution")
    )
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--num_samples", type=int, default=250)
    parser.add_argument("--nfe", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="tiny step counts (smoke run)")
    parser.add_argument("--retrain", action="store_true", help="train again even if done")
    parser.add_argument("--no_write", action="store_true", help="do not write results/")
    parser.add_argument(
        "--summarise_only",
        action="store_true",
        help="re-print the table and re-draw the figure from the stored JSON and samples",
    )
    args = parser.parse_args()
    root = os.path.join(args.workdir, "quick" if args.quick else "full")
    out_dir = root if (args.quick or args.no_write) else RESULTS
    json_path = os.path.join(out_dir, "any_resolution.json")
    shown_path = os.path.join(root, "figure_samples.npz")
    if args.summarise_only:
        with open(json_path, encoding="utf-8") as f:
            result = json.load(f)
        print_table(result)
        print("\n" + markdown_tables(result))
        plot(result, load_shown(shown_path), os.path.join(out_dir, "any_resolution.png"))
        return
    steps, n, nfe = (30, 40, 4) if args.quick else (args.steps, args.num_samples, args.nfe)
    t0 = time.perf_counter()
    st = Stages(root)
    if args.retrain:
        st.times = {}
    configs = make_configs(steps, os.path.join(root, "data"))
    result = dict(
        flowjax_version=flowjax.__version__,
        command="python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        steps=steps,
        num_samples=n,
        nfe=nfe,
        train_sizes=[list(s) for s in TRAIN_SIZES],
        dit_size=list(DIT_SIZE),
        feature_space="digits classifier (penultimate, 64-d) of 8x8 resizes (Pillow bicubic); "
        "reference: the test digits through the same up/down round trip",
        runs={},
    )
    for name, config in configs.items():
        st.train(name, config)
        result["runs"][name] = dict(
            params=count_params(config),
            train_seconds=st.times[name],
            model=dict(config.model),
        )
    scorer = Scorer(n, nfe)
    sizes = cells(args.quick)
    result["real"] = {f"{s[0]}x{s[1]}": scorer.real(s) for _, s in sizes}
    total = sum(len(RULES[k]) if beyond_grid(s) else 1 for k in configs for _, s in sizes)
    shown = {}
    t_score = time.perf_counter()
    with progress_bar(total, desc="sampling", unit="setting") as bar:
        for name in configs:
            row, shown[name] = score_run(scorer, name, st.dir(name), sizes, bar)
            result["runs"][name].update(row)
    result["score_seconds"] = time.perf_counter() - t_score
    result["seconds_this_pass"] = time.perf_counter() - t0
    print_table(result)
    os.makedirs(out_dir, exist_ok=True)
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    save_shown(shown_path, shown)
    plot(result, shown, os.path.join(out_dir, "any_resolution.png"))
    print(f"wrote {json_path} ({result['seconds_this_pass']:.0f} s this pass)")


if __name__ == "__main__":
    main()
