"""pytest plugin of mssbench, registered through the ``pytest11`` entry point.

pytest loads it in every environment where mssbench is installed, for every project, so it must
neither fail nor cost anything for a project that does not use it. It lives outside the
``mssbench`` package (importing ``mssbench`` imports torch, about 2 s of CPU at each pytest
start), needs nothing beyond pytest (no hypothesis) and loads no hypothesis profile. Where
hypothesis is installed it registers a profile named ``mssbench`` (no deadline: the first call
of a model builds it; failing examples printed as a reproduction blob), which a project opts
into with ``pytest --hypothesis-profile=mssbench`` or ``settings.load_profile("mssbench")``.
"""

from __future__ import annotations

#: The hypothesis profile this plugin registers (never loads).
PROFILE = "mssbench"


def register_profile() -> bool:
    """Register the ``mssbench`` hypothesis profile; False where hypothesis is not installed."""
    try:
        from hypothesis import settings
    except ImportError:
        return False
    settings.register_profile(PROFILE, deadline=None, print_blob=True)
    return True


register_profile()
