"""Census-Income (KDD) dataset plugin: two tasks (income, never married), four scenarios."""

from mssbench import DatasetSpec, hookimpl
from mssbench.lazy import lazy

# Imported when first called: registering the plugin imports neither torch nor pandas.
load = lazy("mssbench_census.loader:load")
oov_probe = lazy("mssbench_census.probe:oov_probe")

__all__ = ["load", "mssbench_register_datasets"]


@hookimpl
def mssbench_register_datasets() -> list[DatasetSpec]:
    """Register the ``census-income`` dataset.

    Returns:
        One spec; its ``load`` reads the bundled UCI test file or the user's UCI files.
    """
    return [
        DatasetSpec(
            name="census-income",
            summary=(
                "UCI Census-Income (KDD): tasks income>50K and never married; 4 scenarios "
                "from class of worker (private, government, self_employed, not_working)"
            ),
            load=load,
            options={"protocol": "bundled", "data_dir": ""},
            tags={"oov_probe": oov_probe},  # mssbench.testing.check_dataset's OOV probe
            source=(
                "UCI Machine Learning Repository, Census-Income (KDD) "
                "(https://archive.ics.uci.edu/dataset/117/census+income+kdd), CC BY 4.0; "
                "bundled test file from drawbridge/keras-mmoe"
            ),
        )
    ]
