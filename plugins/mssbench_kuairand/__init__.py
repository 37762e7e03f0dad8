"""KuaiRand-Pure and KuaiRand-1K dataset plugin: tab = scenario; protocols standard and swr."""

from functools import partial

from mssbench import DatasetSpec, hookimpl
from mssbench.lazy import lazy
from mssbench_kuairand.meta import KUAIRAND_URL, TITLES

# Imported when first called: registering the plugin imports neither torch nor pandas.
load = lazy("mssbench_kuairand.loader:load")
prepare = lazy("mssbench_kuairand.loader:prepare")
oov_probe = lazy("mssbench_kuairand.probe:oov_probe")

__all__ = ["load", "mssbench_register_datasets", "prepare"]


@hookimpl
def mssbench_register_datasets() -> list[DatasetSpec]:
    """Register ``kuairand-pure`` and ``kuairand-1k`` (same code, same protocols).

    Returns:
        Two specs; ``prepare`` reads the official logs with user and video features (or
        Scenario-Wise-Rec's merged file), ``load`` reads the cache under that layout's protocol.
    """
    return [
        DatasetSpec(
            name=name,
            summary=(
                f"{title} (Kuaishou short-video logs): tabs 0,1,2,4,6 as scenarios; official "
                "files (protocol standard): tasks is_click, is_like, long_view, split by date; "
                "Scenario-Wise-Rec's merged file (protocol swr): tasks is_click, long_view, "
                "split by a hash of (user, video); users bring the files "
                f"(mssbench data prepare {name} --source DIR)"
            ),
            load=partial(load, name),
            options={"data_dir": ""},
            # oov_probe: mssbench.testing.check_dataset's OOV probe; group: the user
            tags={"oov_probe": partial(oov_probe, name), "group": "user_id"},
            source=(
                f"Kuaishou, KuaiRand ({KUAIRAND_URL}), CC BY-SA 4.0 (Gao et al., KuaiRand, "
                "CIKM 2022); downloaded by each user"
            ),
            prepare=partial(prepare, name),
        )
        for name, title in TITLES.items()
    ]
