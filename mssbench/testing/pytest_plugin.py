"""pytest plugin shipped to plugin authors (registered through the ``pytest11`` entry point)."""

import os

from hypothesis import settings

settings.register_profile("ci", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
