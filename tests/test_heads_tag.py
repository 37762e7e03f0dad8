"""The ``heads`` tag: a model lists the heads it supports; any other head is one clear error."""

import pytest

from mssbench import ModelSpec
from mssbench.api import check_head_supported
from mssbench.errors import ConfigError
from mssbench.spec import HEADS, SpecError
from mssbench.testing import make_schema


def spec(**tags):
    return ModelSpec(name="m", summary="s", build=lambda schema: None, tags=tags)


@pytest.mark.parametrize("heads", ["esmm", [], ["esmm", "product"]])
def test_spec_rejects_a_malformed_heads_tag(heads):
    with pytest.raises(SpecError, match="tag heads must be a non-empty list of direct, esmm"):
        spec(heads=heads).validate()


def test_without_the_tag_every_head_is_allowed():
    spec().validate()
    for head in HEADS:
        check_head_supported(spec(), head, make_schema(), "tiny-synth")


def test_a_listed_head_passes_and_another_is_refused_with_the_reason():
    esmm_only = spec(heads=["esmm"])
    esmm_only.validate()
    check_head_supported(esmm_only, "esmm", make_schema(), "tiny-synth")
    unrelated = make_schema(tasks=("a", "b"), implies=False)
    with pytest.raises(ConfigError) as err:
        check_head_supported(esmm_only, "direct", unrelated, "census-income")
    assert str(err.value) == (
        "model 'm' supports only --head esmm, not 'direct': dataset 'census-income' has no "
        "click -> purchase relation for the ESMM head"
    )
