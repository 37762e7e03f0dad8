"""MovieLens-1M and MovieLens-100K dataset plugin: protocols m3oe (age) and mmlrec (gender)."""

from functools import partial

from mssbench import DatasetSpec, hookimpl
from mssbench.lazy import lazy
from mssbench_movielens.protocols import GROUPLENS_URL, PROTOCOLS

# Imported when first called: registering the plugin imports neither torch nor pandas.
load = lazy("mssbench_movielens.loader:load")
prepare = lazy("mssbench_movielens.loader:prepare")
oov_probe = lazy("mssbench_movielens.probe:oov_probe")

__all__ = ["load", "mssbench_register_datasets", "prepare"]

_SIZES = {"movielens-1m": "1,000,209 ratings", "movielens-100k": "100,000 ratings"}


@hookimpl
def mssbench_register_datasets() -> list[DatasetSpec]:
    """Register ``movielens-1m`` and ``movielens-100k`` (same code, same protocols).

    Returns:
        Two specs; ``prepare`` reads the GroupLens files a user downloaded, ``load`` applies
        the protocol chosen with ``-D protocol=m3oe`` (default) or ``-D protocol=mmlrec``.
    """
    return [
        DatasetSpec(
            name=name,
            summary=(
                f"MovieLens ({size}): protocol m3oe = 3 age groups x click/like (M3oE), "
                "mmlrec = gender x ctr/ctcvr (MMLRec); users bring the GroupLens files "
                f"(mssbench data prepare {name} --source DIR)"
            ),
            load=partial(load, name),
            options={"protocol": "m3oe", "data_dir": ""},
            source=(
                f"GroupLens Research, MovieLens ({GROUPLENS_URL}); GroupLens licence (research "
                "use, no redistribution): downloaded by each user, never bundled"
            ),
            # oov_probe: mssbench.testing.check_dataset's OOV probe
            tags={
                "protocols": list(PROTOCOLS),
                "group": "user_id",
                "oov_probe": partial(oov_probe, name),
            },
            prepare=partial(prepare, name),
        )
        for name, size in _SIZES.items()
    ]
