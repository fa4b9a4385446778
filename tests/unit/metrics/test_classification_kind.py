"""The "classification" task kind: TaskSpec, accuracy metric, summary direction and cross-entropy loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from simo_merge.metrics.classification import ClassificationMetric
from simo_merge.metrics.multitask import MultiTaskMetrics, build_task_metric
from simo_merge.metrics.summary import HIGHER_IS_BETTER, delta_mtl
from simo_merge.tasks import TaskSpec, classification
from simo_merge.training.losses import task_loss


def test_spec_and_helper():
    spec = classification("SUN397", 397)
    assert spec == TaskSpec("SUN397", "classification", 397)
    with pytest.raises(ValueError, match="channels"):
        classification("x", 0)
    with pytest.raises(ValueError, match="unknown kind"):
        TaskSpec("x", "classify", 3)


# torchmetrics warns when compute() follows reset() with no update(); the test asks for that NaN
@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric ClassificationMetric:UserWarning")
def test_accuracy_hand_computed_and_mask():
    m = ClassificationMetric(3)
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [0.0, 5.0, 1.0], [1.0, 0.0, 0.0]])
    m.update(logits, torch.tensor([0, 2, 0, 1]))  # correct: 1, 1, 0, 0
    m.update(torch.tensor([1, 2]), torch.tensor([1, 0]), torch.tensor([True, False]))  # +1 of 1
    assert m.correct.item() == 3 and m.total.item() == 5
    assert m.compute()["accuracy"].item() == pytest.approx(60.0)  # in %
    m.reset()
    assert math.isnan(float(m.compute()["accuracy"]))


def test_accuracy_rejects_bad_shapes():
    m = ClassificationMetric(3)
    with pytest.raises(ValueError, match="num_classes=3"):
        m.update(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\[B\]"):
        m.update(torch.zeros(2, 3), torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="2 predictions for 3 targets"):
        m.update(torch.zeros(2, 3), torch.tensor([0, 1, 2]))


def test_wired_into_multitask_and_summary():
    assert isinstance(build_task_metric(classification("MNIST", 10)), ClassificationMetric)
    assert HIGHER_IS_BETTER["accuracy"] is True
    metrics = MultiTaskMetrics({"MNIST": classification("MNIST", 2)})
    metrics.update({"MNIST": torch.tensor([[1.0, 0.0], [1.0, 0.0]])}, {"MNIST": torch.tensor([0, 1])})
    result = metrics.compute()
    assert result == {"MNIST": {"accuracy": pytest.approx(50.0)}}
    # 50 % vs baseline 80 %: (50 - 80) / 80 = -37.5 %
    assert delta_mtl(result, {"MNIST": {"accuracy": 80.0}}) == pytest.approx(-37.5)


def test_cross_entropy_loss():
    spec = classification("c", 3)
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]], requires_grad=True)
    target = torch.tensor([1, 0])
    by_hand = (-(torch.log_softmax(logits[0], 0)[1]) - torch.log_softmax(logits[1], 0)[0]) / 2
    loss = task_loss(spec, logits, target)
    assert loss.item() == pytest.approx(by_hand.item())
    assert task_loss(spec, logits, target, torch.tensor([True, False])).item() == pytest.approx(
        F.cross_entropy(logits[:1], target[:1]).item()
    )
    zero = task_loss(spec, logits, target, torch.tensor([False, False]))
    assert zero.item() == 0.0 and zero.requires_grad
    with pytest.raises(ValueError, match="classification needs logits"):
        task_loss(spec, logits, target[:, None])


def test_classification_heads_work_with_fisher_sampling_and_output_distillation():
    import torch

    from simo_merge.features.losses import distill_output_loss
    from simo_merge.merging.data.fisher import sampled_log_likelihood
    from simo_merge.tasks import classification

    spec = classification("mnist", 10)
    logits = torch.randn(4, 10, requires_grad=True)
    ll = sampled_log_likelihood(spec, logits, torch.Generator().manual_seed(0))
    assert ll.shape == (4,) and bool((ll <= 0).all())
    ll.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    same = torch.randn(4, 10)
    assert distill_output_loss(spec, same, same).item() == pytest.approx(0.0, abs=1e-6)
    assert distill_output_loss(spec, same, torch.randn(4, 10)).item() > 0
