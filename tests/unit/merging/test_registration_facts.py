"""Method facts are declared at registration, and the declarations agree with the functions."""

import inspect

import pytest

from simo_merge.merging import MERGE_METHODS
from simo_merge.realign import REALIGNERS
from simo_merge.registry import Registry


@pytest.mark.parametrize("name", MERGE_METHODS.names())
def test_merge_facts_agree_with_signature(name):
    facts = MERGE_METHODS.facts(name)
    params = inspect.signature(MERGE_METHODS.get(name)).parameters
    assert facts["needs_data"] == ("merge_data" in params)
    assert facts["progress"] == ("progress" in params)
    assert bool(facts.get("records")) == ("record" in params)
    assert bool(facts.get("device")) == ("device" in params)
    assert facts["scale"] is None or facts["scale"] in params
    assert isinstance(facts["label"], str) and facts["label"]


def test_labels_are_unique_and_the_demo_row_names():
    labels = [MERGE_METHODS.facts(m)["label"] for m in MERGE_METHODS.names()]
    assert len(set(labels)) == len(labels)
    assert [MERGE_METHODS.facts(m)["label"] for m in ("weight_average", "task_arithmetic", "ties")] == [
        "WA",
        "TA",
        "TIES",
    ]


@pytest.mark.parametrize("name", REALIGNERS.names())
def test_realigners_declare_label_and_objective(name):
    facts = REALIGNERS.facts(name)
    assert facts["objective"] in ("unsupervised", "supervised")
    assert facts["label"]
    assert (facts["objective"] == "supervised") == (name == "heads")


def test_registering_without_a_required_fact_fails_naming_it():
    reg: Registry = Registry("thing", required_facts=("label", "scale"))
    with pytest.raises(ValueError, match=r"'x'.*\['scale'\]"):
        reg.register("x", label="X")
    reg.register("y", label="Y", scale=None)(len)
    assert reg.facts("y") == {"label": "Y", "scale": None}
