"""``python -m flowjax.models.vae``: a diffusers AutoencoderKL file -> a flowjax ``.npz``."""

import sys

from flowjax.models.vae.weights import main

sys.exit(main())
