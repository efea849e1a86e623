"""``python -m flowjax.cli COMMAND [flags]``: the ``flowjax`` console script without it."""

from flowjax.cli import run

if __name__ == "__main__":
    run()
