"""`python -m models.training --config CONFIG`: train without the CLI's heavier imports (GPU machines)."""

import sys

from models.training.run import main

sys.exit(main())
