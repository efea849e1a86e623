"""The jobs: library functions a command line (:mod:`flowjax.cli`) or a notebook calls.

One module per job, each taking plain arguments (no flags) and returning a report:

- :mod:`~flowjax.workflows.sample`: sample a trained run with one solver setting and score it;
- :mod:`~flowjax.workflows.boss`: a run's BOSS step schedule (stored) and the straightening
  fine-tune;
- :mod:`~flowjax.workflows.reflow`: (noise, sample) pairs of a teacher run for reflow and
  distillation;
- :mod:`~flowjax.workflows.calibrate`: learn a step grid or bespoke coefficients for a run;
- :mod:`~flowjax.workflows.latents`: encode an image set into a VAE latent set;
- :mod:`~flowjax.workflows.search`: reward-guided particle search on a run;
- :mod:`~flowjax.workflows.score`: Inception FID / IS of samples or of a run, and reference
  statistics;
- :mod:`~flowjax.workflows.convert`: published weight files (VAE, Inception, LPIPS) -> the
  flowjax ``.npz``.

Training itself is :func:`flowjax.training.train_and_evaluate`. This package imports none of
its modules, so importing one job loads only what that job needs.
"""
