"""``python -m ClinicalFMambaLib.cli``: the clinicalfmamba command."""

import sys

from .main import main

sys.exit(main())
