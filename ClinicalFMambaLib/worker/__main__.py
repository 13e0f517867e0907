"""``python -m ClinicalFMambaLib.worker FOLDER``: run the job in FOLDER (see ``job``)."""

import sys

from .job import main

sys.exit(main())
