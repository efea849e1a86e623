"""The config sections several configs share, each stated once (not a config: no ``get_config``).

Configs load this file as ``sibling(__file__, "common")`` (:func:`flowjax.config_files.sibling`),
so it is found next to them in a clone, an editable install and a wheel:

- :func:`base_config`: the sections every job has (objective, optimiser, training loop and
  checkpoints, evaluation, initialisation, mesh and sharding), with the main job's values
  (``toy2d_rf``) as the defaults every config starts from and overrides;
- :func:`dit_rules` and :func:`dit_recipe`: the logical-axis rule table of the sharded DiT
  jobs and the SiT / DiT training recipe with its Inception-FID evaluation;
- :func:`anyres_model`: the model section of the any-resolution transformers (``fitv2``,
  ``nextdit``);
- :func:`reflow_objective`, :func:`meanflow_objective`, :func:`freeflow_objective`: the
  objective sections of the one-step methods, shared by their toy and digits configs.
"""

import math

import ml_collections
from ml_collections import config_dict


def base_config(
    data: ml_collections.ConfigDict, model: dict | ml_collections.ConfigDict | None = None
) -> ml_collections.ConfigDict:
    """A config with ``data`` and ``model`` (empty: set later, e.g. by :func:`dit_recipe`) and
    every other section at its default.

    The defaults are the main job's: flow matching on the linear path with uniform t, AdamW
    2e-3 with warm-up and cosine decay, 8000 steps of batch 512 with EMA 0.999 and a checkpoint
    every 1000 steps, one evaluation at the end (Euler 1-8 and RK4 64 on 20 000 samples), one
    mesh axis ``data`` over all devices and the default logical-axis rules.
    """
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = data
    c.model = ml_collections.ConfigDict() if model is None else model

    # The keys are the objective's constructor arguments (flowjax.objectives.registry); these
    # state the defaults so that they show (and can be overridden on the command line).
    # time_sampler is one name,k=v spec: "logit_normal,loc=0.4,scale=1", "mode,a=1.29",
    # "cosmap", "u_shaped,a=4", "uniform,t_min=0.001"; shift=alpha adds the resolution shift.
    c.objective = dict(
        name="flow_matching",
        path="linear",
        time_sampler="uniform",
        loss="l2",
        huber_c=config_dict.placeholder(float),
        label_dropout=0.0,
    )

    c.optim = dict(
        name="adamw",
        lr=2e-3,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        weight_decay=0.0,
        warmup_steps=200,
        schedule="cosine",
        final_lr_fraction=0.05,
        grad_clip=1.0,
    )

    c.train = dict(
        batch_size=512,
        num_steps=8000,
        ema_decay=0.999,
        log_every=100,
        eval_every=0,  # 0: evaluate once, at the end (set e.g. 2000 for curves)
        checkpoint_every=1000,
        keep_checkpoints=3,
        async_checkpoint=True,
        tensorboard=True,
        progress=True,
        grad_accum_steps=1,  # split each batch into k micro-batches (same gradient, 1/k memory)
        preemption_check_every=10,  # multi-host: steps between agreeing on a SIGTERM
        peak_flops_per_device=config_dict.placeholder(float),  # for MFU; None = look up the device
    )

    c.eval = dict(
        samplers=("euler:1", "euler:2", "euler:4", "euler:8", "rk4:64"),
        num_samples=20_000,
        num_kernel_samples=2000,  # MMD / energy distance use the first 2000 points
        cfg_scale=1.0,
        cfg_interval=config_dict.placeholder(tuple),
        feature_cache_dir=config_dict.placeholder(str),
        metrics=config_dict.placeholder(tuple),  # None: every default metric that applies
    )

    # Start a fresh run from another run's EMA weights (reflow, distillation, FreeFlow).
    c.init = dict(workdir=config_dict.placeholder(str))

    # Sharding is data: mesh axes (-1 = the remaining devices) and the logical-axis rules
    # (None = flowjax.parallel.DEFAULT_RULES; dit_rules() below is a sharded job's table).
    c.mesh = dict(data=-1, fsdp=1, tensor=1)
    c.sharding = dict(rules=config_dict.placeholder(tuple))
    return c


def finetune_optim(c: ml_collections.ConfigDict, lr: float, warmup_steps: int) -> None:
    """A fine-tune from another run's weights: the optimiser's lr and warm-up (the rest as is)."""
    c.optim.lr = lr
    c.optim.warmup_steps = warmup_steps


# ------------------------------------------------------------------ sharded DiT jobs


def dit_rules() -> tuple:
    """Logical axis -> mesh axes of the sharded DiT jobs: the batch over ``data x fsdp``,
    weights FSDP over ``fsdp``, attention heads / MLP width / modulation over ``tensor``. It is
    the library's table (``flowjax.parallel.DEFAULT_RULES``), set in those configs so that the
    run's config shows it and a rule can be changed on the command line. Imported when a DiT
    config is built, so that loading another config (``flowjax train --help``) needs no JAX."""
    from flowjax.parallel.rules import DEFAULT_RULES

    return DEFAULT_RULES


def dit_recipe(
    c: ml_collections.ConfigDict,
    *,
    variant: str,
    dtype: str,
    batch_size: int,
    eval_every: int,
    num_eval_samples: int,
) -> None:
    """The SiT/DiT recipe and its Inception-FID evaluation, set on ``c`` in place.

    A class-conditional DiT (``variant``, activations in ``dtype``, float32 parameters, no
    learned sigma, raw t into the time embedder) with class dropout 0.1; AdamW 1e-4 constant,
    no weight decay or clipping, EMA 0.9999, 400K steps of ``batch_size``; evaluation every
    ``eval_every`` steps with Euler 50 and Heun 100 at CFG scale 1.5 on ``num_eval_samples``
    samples, and the optional VAE (decode latent samples), Inception weights (FID on pixels)
    and reference statistics. Used by ``imagenet256_dit`` and ``cifar10_dit``.
    """
    c.model = dict(
        name="dit",
        variant=variant,
        mlp_ratio=4.0,
        learn_sigma=False,
        time_scale=1.0,
        conditional=True,
        dtype=dtype,
        param_dtype="float32",
        remat=False,
    )
    c.objective.label_dropout = 0.1  # linear path, uniform t, L2: the toy defaults
    c.optim.update(
        dict(lr=1e-4, weight_decay=0.0, warmup_steps=0, schedule="constant", grad_clip=0.0)
    )
    c.optim.mu_dtype = config_dict.placeholder(str)  # "bfloat16": Adam's first moment in bf16
    c.train.update(
        dict(
            batch_size=batch_size,
            num_steps=400_000,
            ema_decay=0.9999,
            log_every=100,
            eval_every=eval_every,
            checkpoint_every=10_000,
        )
    )
    c.eval.update(
        dict(samplers=("euler:50", "heun:100"), num_samples=num_eval_samples, cfg_scale=1.5)
    )
    c.eval.num_kernel_samples = num_eval_samples
    c.eval.vae_weights = config_dict.placeholder(str)  # decode latent samples (flowjax.models.vae)
    c.eval.inception_weights = config_dict.placeholder(str)  # Inception FID on decoded pixels
    c.eval.fid_stats = config_dict.placeholder(str)  # reference (mu, sigma) .npz


# ------------------------------------------------------------------ any-resolution transformers


def anyres_model(
    name: str,
    *,
    patch_size: int,
    hidden_size: int,
    depth: int,
    num_heads: int,
    max_tokens: int,
    dtype: str = "float32",
    conditional: bool = True,
) -> ml_collections.ConfigDict:
    """The model section of ``fitv2`` / ``nextdit``: plain 2-D RoPE (``rope``, the one field a
    sampling run overrides to pick an extrapolation rule), ``train_grid`` = FiTv2's
    ``sqrt(max_tokens)`` tokens per side (what the extrapolation rules scale against),
    ``max_tokens`` (longer inputs are refused), float32 parameters, no remat."""
    return ml_collections.ConfigDict(
        dict(
            name=name,
            conditional=conditional,
            patch_size=patch_size,
            hidden_size=hidden_size,
            depth=depth,
            num_heads=num_heads,
            rope="rope",
            train_grid=math.isqrt(max_tokens),
            max_tokens=max_tokens,
            dtype=dtype,
            param_dtype="float32",
            remat=False,
        )
    )


# ------------------------------------------------------------------ one-step methods

REFLOW_VARIANTS = ("2rf", "rfpp", "distill1", "distill2", "distill4")


def reflow_objective(c: ml_collections.ConfigDict, variant: str) -> None:
    """Set ``c.objective`` (and the eval samplers) for a reflow ``variant``."""
    if variant not in REFLOW_VARIANTS:
        raise ValueError(f"unknown reflow variant {variant!r}; choose one of {REFLOW_VARIANTS}")
    c.objective.name = "reflow"
    c.objective.reflow = dict(
        huber_normalize=False,
        lpips_weights=config_dict.placeholder(str),
        lpips_time_weight="inverse",
        lpips_replace_pooling=True,
    )
    c.objective.time_sampler = "uniform,t_min=0.001"  # the official RF code's U(1e-3, 1)
    c.eval.samplers = ("euler:1", "euler:2", "euler:4", "euler:8", "rk4:64")
    if variant == "rfpp":
        c.objective.time_sampler = "u_shaped,a=4"
        c.objective.loss = "pseudo_huber"
        c.objective.reflow.huber_normalize = True  # 2-RF++: divide by d, c = 0.00054 d
    elif variant.startswith("distill"):
        m = int(variant[len("distill") :])
        c.objective.time_sampler = f"discrete,num_steps={m}"
        c.eval.samplers = (f"euler:{m}",)


def meanflow_objective(c: ml_collections.ConfigDict) -> None:
    """Set ``c.objective`` (and the eval samplers, the model's time scale) for MeanFlow
    (``toy2d_meanflow`` has the measurements behind the choices)."""
    c.model.time_scale = 1.0  # raw t: the JVP differentiates the network in time
    c.objective.name = "meanflow"
    c.objective.time_sampler = "uniform"
    # Stated so that each field can be overridden on the command line; all are MeanFlow's
    # defaults except adaptive_p (and time_sampler above).
    c.objective.meanflow = dict(
        equal_fraction=0.75,
        adaptive_p=0.0,
        adaptive_c=0.01,
        label_dropout_rows="leading",  # with label dropout: on the e = s rows, as published
        omega=1.0,
        kappa=0.0,
        guidance_interval=None,
        jvp_all_rows=False,  # True: the JVP over the whole batch, as published (same gradients)
    )
    # Dispersive's defaults, with weight 0 (= no dispersive term); stated to be overridable.
    c.objective.dispersive = dict(
        weight=0.0,
        layers=("feature_1",),
        variant="infonce_l2",
        tau=1.0,
        normalize="none",
        margin=1.0,
    )
    c.eval.samplers = ("flowmap:1", "flowmap:2", "flowmap:4")


def freeflow_objective(c: ml_collections.ConfigDict) -> None:
    """Set ``c.objective`` and the sampler for FreeFlow."""
    c.objective.name = "freeflow"
    # FreeFlow's defaults (but the teacher's guidance scale), stated to be overridable; the
    # samplers are name,k=v specs like objective.time_sampler.
    c.objective.freeflow = dict(
        teacher_cfg_scale=c.eval.get("cfg_scale", 1.0),
        correction_fraction=0.25,
        delta_sampler="uniform",
        r_sampler="logit_normal,loc=-0.8,scale=1",
        weight_power=1.0,
        weight_eps=1e-3,
        alpha=1.0,
        correction_guidance_interval=(0.3, 1.0),
    )
    # The student's delta embedding sees raw delta: the objective differentiates in it.
    c.model.end_time_scale = 1.0
    c.eval.samplers = ("flowmap:1",)
    c.eval.cfg_scale = 1.0  # guidance is distilled into the student
