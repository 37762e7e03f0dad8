"""A dataset plugin for one CSV with a scenario column and 0/1 task columns (CONTRIBUTING.md)."""

from mssbench import DatasetSpec, Protocol, Task, hookimpl
from mssbench.data import TabularLayout, hash_split, read_csv, split_columns, tabular_dataset

COLUMNS = {"user_id": "int", "item_id": "int", "city": "str", "price": "float"}
SCENARIOS = {"app": "app", "web": "web"}  # value of the scenario column -> scenario name
TASKS = (Task("ctr", "click"), Task("ctcvr", "purchase"))  # task name, label column
LAYOUT = TabularLayout(
    categorical=("user_id", "item_id", "city"),
    numeric=("price",),
    scenario="channel",
    scenarios=SCENARIOS,
    tasks=TASKS,
)
PROTOCOL = Protocol(
    dataset="my-shop",
    name="standard",
    version=1,
    scenarios=tuple(SCENARIOS.values()),
    split_rule="valid/test = 10%/10% of the users by a stable hash (salt 1); train-only encoding",
)


def load(options):
    labels = {t.label: "int" for t in TASKS}
    table = read_csv(options["path"], {**COLUMNS, "channel": "str", **labels})
    table.check_binary(*labels)
    table.check_in("channel", list(SCENARIOS))
    codes = hash_split(table["user_id"], valid_fraction=0.1, test_fraction=0.1, salt=1)
    parts = split_columns(table.columns, codes)
    return tabular_dataset(parts, LAYOUT, PROTOCOL, info={"files": [table.facts]})


@hookimpl
def mssbench_register_datasets():
    spec = DatasetSpec(
        name="my-shop",
        summary="Clicks and purchases of my shop, app and web",
        load=load,
        options={"path": "my_shop.csv"},
    )
    return [spec]
