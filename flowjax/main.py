"""``python -m flowjax.main``: the ``flowjax train`` command (:mod:`flowjax.cli.train`)."""

from flowjax.cli import train

if __name__ == "__main__":
    train.run()
