"""``python -m flowjax.search``: the ``flowjax search`` command (:mod:`flowjax.cli.search`)."""

from flowjax.cli import search

if __name__ == "__main__":
    search.run()
