"""``python -m flowjax.latents``: the ``flowjax latents`` command (:mod:`flowjax.cli.latents`)."""

from flowjax.cli import latents

if __name__ == "__main__":
    latents.run()
