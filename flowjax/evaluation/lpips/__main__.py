"""``python -m flowjax.evaluation.lpips``: the LPIPS weight converter (see its ``--help``)."""

import sys

from flowjax.evaluation.lpips.convert import main

if __name__ == "__main__":
    sys.exit(main())
