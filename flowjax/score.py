"""``python -m flowjax.score``: the ``flowjax score`` command (:mod:`flowjax.cli.score`)."""

from flowjax.cli import score

if __name__ == "__main__":
    score.run()
