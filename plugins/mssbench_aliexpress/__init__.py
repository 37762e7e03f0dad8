"""AliExpress (Tianchi 74690) dataset plugin: 5 countries = scenarios, tasks ctr and ctcvr."""

from mssbench import DatasetSpec, hookimpl
from mssbench.lazy import lazy
from mssbench_aliexpress.schema import TIANCHI_URL

# Imported when first called: registering the plugin imports neither torch nor pyarrow.
load = lazy("mssbench_aliexpress.loader:load")
prepare = lazy("mssbench_aliexpress.ingest:prepare")
oov_probe = lazy("mssbench_aliexpress.probe:oov_probe")

__all__ = ["load", "mssbench_register_datasets", "prepare"]


@hookimpl
def mssbench_register_datasets() -> list[DatasetSpec]:
    """Register the ``aliexpress`` dataset.

    Returns:
        One spec: ``prepare`` turns the files a user downloaded into the cache, ``load`` reads
        the cache under the standard protocol.
    """
    return [
        DatasetSpec(
            name="aliexpress",
            summary=(
                "AliExpress search logs (Tianchi 74690): countries NL, ES, FR, US, RU as "
                "scenarios; tasks ctr (click) and ctcvr (purchase), cvr on clicks; users bring "
                "the data (mssbench data prepare aliexpress --source DIR)"
            ),
            load=load,
            options={"data_dir": "", "scenarios": "", "memory": "auto"},
            source=(
                f"Alibaba, AliExpress dataset on Tianchi ({TIANCHI_URL}), Tianchi terms "
                "(research use); downloaded by each user, never redistributed"
            ),
            prepare=prepare,
            # oov_probe: mssbench.testing.check_dataset's OOV probe; group: the search page
            tags={"oov_probe": oov_probe, "group": "search_id"},
        )
    ]
