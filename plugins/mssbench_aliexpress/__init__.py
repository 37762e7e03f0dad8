"""AliExpress (Tianchi 74690) dataset plugin: 5 countries = scenarios, tasks ctr and ctcvr."""

from mssbench import DatasetSpec, hookimpl
from mssbench_aliexpress.ingest import TIANCHI_URL, prepare
from mssbench_aliexpress.loader import load
from mssbench_aliexpress.probe import oov_probe

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
            tags={"oov_probe": oov_probe},  # mssbench.testing.check_dataset's OOV probe
        )
    ]
