"""Named run presets (``mssbench run --preset NAME``): the one place they are declared.

A preset sets training options and model hyper-parameters a user did not give: anything given
on the command line wins. Hyper-parameters apply to every model that declares the key with a
default of the same shape (a list for a list, a scalar for a scalar), so one preset serves
every model. The run's config records the preset's name next to the values it resolved to.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping

from mssbench.errors import ConfigError

__all__ = ["PRESETS", "Preset", "get_preset"]


@dataclass(frozen=True)
class Preset:
    """A named smoke or reference configuration.

    Attributes:
        name: What ``--preset`` takes.
        summary: One line for ``--help`` and the README.
        training: :class:`~mssbench.config.RunConfig` fields (``epochs``, ``batch_size``...).
        params: Model hyper-parameters, applied where a model declares the key.
    """

    name: str
    summary: str
    training: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)

    def params_for(self, defaults: Mapping[str, Any]) -> dict[str, Any]:
        """The preset's hyper-parameters that a model with these ``defaults`` takes."""
        return {
            key: value
            for key, value in self.params.items()
            if key in defaults and isinstance(value, list) == isinstance(defaults[key], list)
        }

    def training_for(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """``given`` training options with the preset's filled in where none was given."""
        return {**self.training, **given}


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            name="quick",
            summary="smoke run: one short epoch (60 steps of 512 rows), embeddings of 8, "
            "layers of 64/32 and towers of 16: a first table in about a minute on 2 busy CPU "
            "cores; its numbers are not comparable with the leaderboards",
            training={"epochs": 1, "max_steps_per_epoch": 60, "batch_size": 512},
            params={
                "embed_dim": 8,
                "d_model": 16,
                "n_experts": 4,
                "expert_hidden": [64, 32],
                "bottom_hidden": [64, 32],
                "level_widths": [64, 32],
                "column_hidden": [64, 32],
                "dnn_hidden": [64, 32],
                "hidden": [64, 32, 16],
                "input_width": 64,
                "expert_dim": 32,
                "scenario_expert_hidden": [32],
                "task_expert_hidden": [16],
                "tower_hidden": [16],
            },
        ),
    )
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a :class:`ConfigError` listing the known ones otherwise."""
    if name in PRESETS:
        return PRESETS[name]
    msg = f"--preset: unknown preset {name!r}. Known presets: {', '.join(sorted(PRESETS))}."
    close = difflib.get_close_matches(name, list(PRESETS), n=1)
    if close:
        msg += f" Did you mean {close[0]!r}?"
    raise ConfigError(msg)
