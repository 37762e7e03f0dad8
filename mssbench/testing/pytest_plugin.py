"""Former location of the pytest plugin, now :mod:`pytest_mssbench`.

The plugin moved outside the ``mssbench`` package so that pytest in other projects does not
import torch. This module stays so that an install whose metadata still names it (made before
the move and not reinstalled since) keeps loading.
"""

from pytest_mssbench import PROFILE, register_profile

__all__ = ["PROFILE", "register_profile"]
