"""``python -m flowjax.evaluation.lpips``: the ``flowjax convert-lpips`` command
(:mod:`flowjax.cli.convert_lpips`)."""

from flowjax.cli import convert_lpips

if __name__ == "__main__":
    convert_lpips.run()
