"""``python -m flowjax.reflow``: the ``flowjax reflow`` command (:mod:`flowjax.cli.reflow`)."""

from flowjax.cli import reflow

if __name__ == "__main__":
    reflow.run()
