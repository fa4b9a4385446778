"""Method facts: declared at registration for what a signature cannot say (label, scale, ...), read off
the signature once, at registration, for the runtime arguments it takes."""

import inspect

import pytest

from simo_merge.merging import MERGE_METHODS, signature_facts
from simo_merge.realign import REALIGNERS
from simo_merge.registry import Registry

NO_RUNTIME_ARGUMENTS = {"needs_data": False, "progress": False, "records": False, "device": False}


@pytest.mark.parametrize(
    "name, derived",
    [
        ("ties", NO_RUNTIME_ARGUMENTS),
        ("fisher", {**NO_RUNTIME_ARGUMENTS, "needs_data": True}),
        ("regmean", {**NO_RUNTIME_ARGUMENTS, "needs_data": True}),
        ("iso_c", {**NO_RUNTIME_ARGUMENTS, "device": True}),
        ("tsv_m", {**NO_RUNTIME_ARGUMENTS, "device": True}),
        ("adamerging", {"needs_data": True, "progress": True, "records": True, "device": False}),
    ],
)
def test_runtime_facts_are_read_off_the_signature(name, derived):
    facts = MERGE_METHODS.facts(name)
    assert {k: facts[k] for k in derived} == derived


def test_a_registered_function_gets_the_facts_of_its_parameters():
    reg: Registry = Registry("method", required_facts=("label",), derive_facts=signature_facts)

    @reg.register("toy", label="Toy")
    def toy(base, task_vectors, *, merge_data=None, device="cpu", lam=1.0):
        return base

    assert reg.facts("toy") == {
        "label": "Toy",
        "needs_data": True,
        "progress": False,
        "records": False,
        "device": True,
    }


def test_declaring_a_fact_the_signature_gives_fails_naming_it():
    reg: Registry = Registry("method", derive_facts=signature_facts)
    with pytest.raises(ValueError, match=r"'toy'.*\['needs_data'\].*do not declare"):
        reg.register("toy", label="Toy", needs_data=False)(lambda base, task_vectors: base)
    assert "toy" not in reg


@pytest.mark.parametrize("name", MERGE_METHODS.names())
def test_declared_scale_is_a_keyword_and_label_is_named(name):
    facts = MERGE_METHODS.facts(name)
    params = inspect.signature(MERGE_METHODS.get(name)).parameters
    assert facts["scale"] is None or params[facts["scale"]].kind == inspect.Parameter.KEYWORD_ONLY
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
