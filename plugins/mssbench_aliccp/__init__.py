"""Ali-CCP (Tianchi 408) dataset plugin: field 301 = scenario, tasks ctr and ctcvr."""

from mssbench import DatasetSpec, hookimpl
from mssbench.lazy import lazy
from mssbench_aliccp.meta import TIANCHI_URL

# Imported when first called: registering the plugin imports neither torch nor pyarrow.
load = lazy("mssbench_aliccp.loader:load")
prepare = lazy("mssbench_aliccp.loader:prepare")
oov_probe = lazy("mssbench_aliccp.probe:oov_probe")

__all__ = ["load", "mssbench_register_datasets", "prepare"]


@hookimpl
def mssbench_register_datasets() -> list[DatasetSpec]:
    """Register ``ali-ccp``.

    Returns:
        One spec; ``prepare`` reads the raw Tianchi files or a processed copy (torch-rechub's
        33 columns, AITM's 20 columns), ``load`` reads the cache under that layout's protocol.
    """
    return [
        DatasetSpec(
            name="ali-ccp",
            summary=(
                "Alibaba Click and Conversion Prediction (Tianchi 408): field 301 (3 values) as "
                "scenarios; tasks ctr (click) and ctcvr (purchase), cvr on clicks; users bring "
                "the data (mssbench data prepare ali-ccp --source DIR)"
            ),
            load=load,
            options={"data_dir": ""},
            tags={"oov_probe": oov_probe},  # mssbench.testing.check_dataset's OOV probe
            source=(
                f"Alibaba, Ali-CCP on Tianchi ({TIANCHI_URL}), Tianchi terms (research use); "
                "downloaded by each user, never redistributed"
            ),
            prepare=prepare,
        )
    ]
