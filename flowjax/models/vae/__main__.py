"""``python -m flowjax.models.vae``: the ``flowjax convert-vae`` command
(:mod:`flowjax.cli.convert_vae`)."""

from flowjax.cli import convert_vae

if __name__ == "__main__":
    convert_vae.run()
