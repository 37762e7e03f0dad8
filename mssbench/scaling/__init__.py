"""Scaling-law studies: how a model's loss falls with parameters, data, compute and batch.

``mssbench scaling`` plans a grid of runs (:mod:`~mssbench.scaling.grid`), runs it as a
resumable suite and measures every point (:mod:`~mssbench.scaling.study`), fits
``L(x) = a * x**(-b) + L_inf`` with bootstrap intervals (:mod:`~mssbench.scaling.fit`) and
writes a table, the compute-optimal frontier and log-log plots (:mod:`~mssbench.scaling.report`).
"""

from mssbench.scaling.fit import PowerLaw, fit_power_law
from mssbench.scaling.grid import AXES, scaled_params, width_params
from mssbench.scaling.study import Study, execute

__all__ = ["AXES", "PowerLaw", "Study", "execute", "fit_power_law", "scaled_params", "width_params"]
