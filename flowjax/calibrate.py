"""``python -m flowjax.calibrate``: the ``flowjax calibrate`` command
(:mod:`flowjax.cli.calibrate`)."""

from flowjax.cli import calibrate

if __name__ == "__main__":
    calibrate.run()
