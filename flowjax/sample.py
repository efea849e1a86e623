"""``python -m flowjax.sample``: the ``flowjax sample`` command (:mod:`flowjax.cli.sample`)."""

from flowjax.cli import sample

if __name__ == "__main__":
    sample.run()
