"""The AliExpress (Tianchi 74690) schema and the standard MS-MT protocol.

Shared by the real dataset and its synthetic twin.
"""

from __future__ import annotations

from typing import Sequence

from mssbench.spec import CategoricalField, DatasetSchema, Implies, Protocol, Task

#: Where users download the data (the dataset page on Tianchi).
TIANCHI_URL = "https://tianchi.aliyun.com/dataset/74690"
#: Countries in the canonical order; each is one scenario.
COUNTRIES = ("NL", "ES", "FR", "US", "RU")
#: The 16 categorical columns of the processed layout (7 user, 2 user, 7 item; MTReclib's layout).
CATEGORICAL = tuple(f"categorical_{i}" for i in range(1, 17))
#: The 63 numeric columns (23 user, 40 item), already in [0, 1].
NUMERIC = tuple(f"numerical_{i}" for i in range(1, 64))
#: Code counts (max code + 1) per categorical column, as published for all five countries.
CODE_COUNTS = (11, 4, 7, 2, 33, 7, 50, 8, 8, 2, 2, 2, 2, 2, 2, 2)
TASKS = (Task("ctr", "click"), Task("ctcvr", "conversion"))
RELATIONS = (Implies(child="ctcvr", parent="ctr", conditional="cvr"),)

#: Version of the standard protocol; bump on any change to the split rule or encoding.
PROTOCOL_VERSION = 1
#: Share of the official train search pages held out for validation.
VALID_FRACTION = 0.1
#: Salt of the page hash (part of the protocol).
SPLIT_SALT = 74690
SPLIT_RULE = (
    "official time-ordered train/test per country; valid = 10% of the official train search "
    "pages by a stable hash of the search id (mssbench.data.splits.holdout_mask, salt 74690); "
    "categorical vocabularies from train, unseen ids -> 0"
)


def check_countries(countries: Sequence[str]) -> tuple[str, ...]:
    """Canonical-order tuple of country codes; ``ValueError`` naming an unknown one."""
    wanted = [c.strip().upper() for c in countries if c.strip()]
    unknown = [c for c in wanted if c not in COUNTRIES]
    if unknown:
        raise ValueError(
            f"unknown country code(s) {', '.join(unknown)}: expected some of {', '.join(COUNTRIES)}"
        )
    return tuple(c for c in COUNTRIES if c in wanted)


def make_schema(
    countries: Sequence[str], vocab_sizes: Sequence[int] | None = None
) -> DatasetSchema:
    """The AliExpress schema for ``countries``.

    Args:
        countries: Scenario set (canonical order is enforced).
        vocab_sizes: Per-field vocabulary sizes including the out-of-vocabulary id 0; defaults
            to the published code counts + 1.
    """
    sizes = tuple(vocab_sizes) if vocab_sizes is not None else tuple(c + 1 for c in CODE_COUNTS)
    return DatasetSchema(
        categorical=tuple(CategoricalField(n, v) for n, v in zip(CATEGORICAL, sizes, strict=True)),
        numeric=NUMERIC,
        scenario_field="country",
        scenarios=check_countries(countries),
        tasks=TASKS,
        relations=RELATIONS,
    )


def make_protocol(
    dataset: str, countries: Sequence[str], synthetic: bool = False, variant: str = ""
) -> Protocol:
    """The standard protocol for ``countries`` (its id names the scenario set).

    Args:
        dataset: Dataset name.
        countries: Scenario set.
        synthetic: Generated data (the id then starts with ``synthetic/``).
        variant: What else defines the data, e.g. a generator's parameters; it becomes part of
            the protocol name, so that different generated data never share an id.
    """
    return Protocol(
        dataset=dataset,
        name=f"standard-{variant}" if variant else "standard",
        version=PROTOCOL_VERSION,
        scenarios=check_countries(countries),
        split_rule=SPLIT_RULE,
        synthetic=synthetic,
    )
