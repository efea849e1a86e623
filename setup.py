"""flowjax: flow-matching generative models in JAX.

`pip install -e .` installs everything the library, its main job and its data need;
`pip install -e .[dev]` adds the test and notebook tools. TensorFlow is never required
(the `tf` extra exists only for users who want tfds' TensorFlow-backed features).

The top-level `configs/` directory is installed as the subpackage `flowjax.configs`, so a
wheel carries the config files and `--config=toy2d_rf` / `load_config("toy2d_rf")` work after
any install (`flowjax.config_files` finds them in either place).
"""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    # Lower bounds are what the code is written against; no upper bounds, so a TPU/GPU
    # user with a newer JAX can install.
    "jax>=0.6.0",
    "flax>=0.10.4",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11.0",
    "einops>=0.8.0",  # patchify / unpatchify (flowjax.models.dit)
    "ml_collections>=1.0.0",
    "absl-py>=2.1.0",
    "numpy>=1.26",
    "diffrax>=0.6.0",  # adaptive reference solves (flowjax.solvers.AdaptiveSolve)
    # Data: tfds + array_record + grain read data sets without TensorFlow.
    "tensorflow-datasets>=4.9.7",
    "array_record>=0.7.0",
    "grain>=0.2.10",
    # tfds's dataset builders import importlib_resources (through etils' lazy imports) without
    # declaring it; a fresh environment without it cannot prepare or read a builder.
    "importlib_resources>=6.0",
    "scikit-learn>=1.3",  # ships the UCI digits images used by the bundled tfds builder
    # Logging, progress, figures.
    "tqdm>=4.66",
    "matplotlib>=3.8",
    "pillow>=10.0",  # image folders (flowjax.data.image_folder), the sample figure for TensorBoard
    "tensorboardX>=2.6.2",  # writes the event files (no TensorFlow)
    "tensorboard>=2.16",  # the viewer: `tensorboard --logdir=WORKDIR/tensorboard`
]

EXTRAS_REQUIRE = {
    "dev": [
        "pytest>=8.0",
        "scipy>=1.11",  # reference implementations in the tests (stats, linalg, ndimage)
        "chex>=0.1.88",  # tree assertions in the tests (exact resume, multi-process agreement)
        "pytest-xdist>=3.5",
        "nbclient>=0.10",
        "nbformat>=5.10",
        "ipykernel>=6.29",
        "ruff>=0.6",
    ],
    "tf": ["tensorflow>=2.16"],
    # Optional peers for experiments/solver_sweep.py (never imported by the library or tests).
    "bench": ["torch>=2.4", "diffusers>=0.32", "flow_matching>=1.0", "torchdiffeq>=0.2.5"],
}

setup(
    name="flowjax",
    version="0.1.0",
    description="Flow matching, one-step distillation and fast samplers in JAX",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["flowjax", "flowjax.*"]) + ["flowjax.configs"],
    package_dir={"flowjax.configs": "configs"},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    include_package_data=True,
    # `flowjax train --config=...`, `flowjax sample ...`: flowjax.cli lists the commands.
    entry_points={"console_scripts": ["flowjax = flowjax.cli:run"]},
    license="Apache-2.0",
)
