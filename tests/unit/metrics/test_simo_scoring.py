"""protocol=simo scores as the SIMO code does (issue 24 items 1 and 6): per-batch running means, SIMO's
valid pixels, primary-metric ΔMTL; the default protocol keeps its pooled, masked, all-metric values.

The reference is the authors' metric code, d23845jg/simo_merging @ 2fcaa49a ``training/utils.py``,
transcribed below (only the metric lines; the loss bookkeeping is left out), run on the same fixture.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simo_merge.metrics import MultiTaskMetrics, delta_mtl
from simo_merge.metrics.selection import SIMO_SINGLE_TASK
from simo_merge.protocols import PROTOCOLS
from simo_merge.tasks import IGNORE_INDEX, TaskSpec, normals, regression, segmentation


# ------------------------------------------------------------------ the authors' code, transcribed
class TheirConfMatrix:
    """``training/utils.py`` lines 106-134 (``ConfMatrix``)."""

    def __init__(self, num_classes):
        self.num_classes = num_classes
        self.mat = None

    def update(self, pred, target):
        n = self.num_classes
        if self.mat is None:
            self.mat = torch.zeros((n, n), dtype=torch.int64, device=pred.device)
        with torch.no_grad():
            k = (target >= 0) & (target < n)
            inds = n * target[k].to(torch.int64) + pred[k]
            self.mat += torch.bincount(inds, minlength=n**2).reshape(n, n)

    def get_metrics(self):
        h = self.mat.float()
        intersection = torch.diag(h)
        union = h.sum(1) + h.sum(0) - intersection
        valid = union > 0  # Avoid division by zero
        iu = torch.zeros_like(union)
        iu[valid] = intersection[valid] / union[valid]
        return torch.mean(iu[valid]).item()


class TheirTaskMetric:
    """``training/utils.py`` lines 142-305 (``TaskMetric``, one epoch, loss lines dropped): ``__init__``
    151-166, ``update_metric`` 179-244, ``compute_metric`` 246-305 with ``include_mtl``."""

    SEG = ["seg", "part_seg", "segment_semantic"]
    ABS = ["depth", "disp", "depth_zbuffer", "keypoints2d", "edge_texture"]

    def __init__(self, train_tasks, batch_size, dataset, include_mtl=False):
        self.train_tasks, self.batch_size, self.dataset = train_tasks, batch_size, dataset
        self.include_mtl = include_mtl
        self.metric = {key: {"metric": np.zeros([1])} for key in train_tasks}
        self.metric["all"] = np.zeros([1])
        self.data_counter = 0
        self.conf_mtx = {
            t: TheirConfMatrix(train_tasks[t]["num_classes"]) for t in train_tasks if t in self.SEG
        }

    def update_metric(self, img_pred, img_metas, img_gt):
        curr_bs = list(img_pred.values())[0]["pred"].shape[0]
        r = self.data_counter / (self.data_counter + curr_bs / self.batch_size)
        e = 0
        self.data_counter += 1
        with torch.no_grad():
            for task_id, gt in img_gt.items():
                pred = img_pred[task_id]["pred"]
                if task_id in self.SEG:
                    self.conf_mtx[task_id].update(pred.argmax(1).flatten(), gt.flatten())
                if task_id in self.ABS:
                    ignore_idx = img_metas.get("mask", 0)  # invalid_idx=0
                    valid_mask = (
                        (torch.sum(gt, dim=1, keepdim=True) != ignore_idx).to(pred.device)
                        if isinstance(ignore_idx, int)
                        else ignore_idx
                    )
                    abs_err = torch.mean(torch.abs(pred - gt).masked_select(valid_mask)).item()
                    self.metric[task_id]["metric"][e] = (
                        r * self.metric[task_id]["metric"][e] + (1 - r) * abs_err
                    )
                if task_id in ["normal"]:
                    valid_mask = (torch.sum(gt, dim=1) != 0).to(pred.device)
                    degree_error = torch.acos(
                        torch.clamp(torch.sum(pred * gt, dim=1).masked_select(valid_mask), -1, 1)
                    )
                    mean_error = torch.mean(torch.rad2deg(degree_error)).item()
                    self.metric[task_id]["metric"][e] = (
                        r * self.metric[task_id]["metric"][e] + (1 - r) * mean_error
                    )

    def compute_metric(self):
        e = 0
        for task_id in self.train_tasks:
            if task_id in self.SEG:
                self.metric[task_id]["metric"][e] = self.conf_mtx[task_id].get_metrics()
        if not self.include_mtl:
            return
        if self.dataset == "nyuv2":
            stl = {"seg": 0.6823, "depth": 0.2708, "normal": 24.73}
        elif self.dataset == "cityscapes":
            stl = {"seg": 0.5876, "part_seg": 0.5088, "disp": 0.0102}
        elif self.dataset == "taskonomy":
            stl = {
                "segment_semantic": 0.5139,
                "depth_zbuffer": 0.0146,
                "normal": 18.4414,
                "keypoints2d": 0.0062,
                "edge_texture": 0.0126,
            }
        delta_mtl = 0
        for task_id in self.train_tasks:
            if task_id in self.SEG:
                delta_mtl += (self.metric[task_id]["metric"][e] - stl[task_id]) / stl[task_id]
            elif task_id in ["depth", "normal", "disp", "depth_zbuffer", "keypoints2d", "edge_texture"]:
                delta_mtl -= (self.metric[task_id]["metric"][e] - stl[task_id]) / stl[task_id]
        self.metric["all"][e] = delta_mtl / len(stl)


# ----------------------------------------------------------------------------------- the fixture
BATCHES = (4, 4, 3)  # a short last batch, as a DataLoader without drop_last gives
H, W = 5, 6


def _normals(g: torch.Generator, n: int) -> torch.Tensor:
    """Non-unit normals; some pixels 0 (invalid everywhere), some with components summing to 0."""
    v = torch.randn(n, 3, H, W, generator=g, dtype=torch.float64) * 0.7
    v[:, :, 0, 0] = 0.0
    v[:, 0, 1, 1], v[:, 1, 1, 1], v[:, 2, 1, 1] = 0.5, -0.25, -0.25  # sums to 0, non-zero length
    return v


def nyuv2_batches(seed: int = 0) -> list[tuple[dict, dict, dict]]:
    """(our batch, their targets, predictions) per batch: seg 13 classes (-1 theirs / 255 ours = ignore),
    depth with zeros, normals as above; predictions of varied quality per batch."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, n in enumerate(BATCHES):
        raw = torch.randint(-1, 13, (n, H, W), generator=g)
        depth = torch.rand(n, 1, H, W, generator=g, dtype=torch.float64) * 5
        depth[depth < 0.8 + i] = 0.0  # a different share of invalid pixels per batch
        normal = _normals(g, n)
        preds = {
            "semseg": torch.randn(n, 13, H, W, generator=g, dtype=torch.float64),
            "depth": depth + torch.randn(n, 1, H, W, generator=g, dtype=torch.float64) * (0.2 + i),
            "normal": normal + torch.randn(n, 3, H, W, generator=g, dtype=torch.float64) * 0.3,
        }
        ours = {
            "semseg": torch.where(raw < 0, IGNORE_INDEX, raw),
            "semseg_mask": raw >= 0,
            "depth": depth,
            "depth_mask": depth[:, 0] > 0,
            "normal": normal,
            "normal_mask": normal.norm(dim=1) > 0,
        }
        out.append((ours, {"seg": raw, "depth": depth, "normal": normal}, preds))
    return out


NYU_SPECS = {"semseg": segmentation("semseg", 13), "depth": regression("depth"), "normal": normals()}
NYU_THEIRS = {"seg": "semseg", "depth": "depth", "normal": "normal"}


def ours(specs: dict[str, TaskSpec], batches, protocol: str) -> dict[str, dict[str, float]]:
    p = PROTOCOLS[protocol]
    metrics = MultiTaskMetrics(specs, aggregation=p.aggregation, valid_pixels=p.valid_pixels)
    for batch, _, preds in batches:
        metrics.update(preds, batch)
    return metrics.compute()


def theirs(tasks: dict[str, dict], names: dict[str, str], batches, dataset: str | None) -> TheirTaskMetric:
    metric = TheirTaskMetric(tasks, BATCHES[0], dataset, include_mtl=dataset is not None)
    for _, targets, preds in batches:
        metric.update_metric({t: {"pred": preds[names[t]]} for t in tasks}, {}, targets)
    metric.compute_metric()
    return metric


@pytest.fixture(scope="module")
def nyu():
    batches = nyuv2_batches()
    tasks = {"seg": {"num_classes": 13}, "depth": {"num_classes": 1}, "normal": {"num_classes": 3}}
    return batches, theirs(tasks, NYU_THEIRS, batches, "nyuv2")


def test_simo_protocol_metrics_equal_the_authors_code(nyu) -> None:
    batches, ref = nyu
    got = ours(NYU_SPECS, batches, "simo")
    assert got["semseg"]["miou"] / 100 == pytest.approx(ref.metric["seg"]["metric"][0], abs=1e-6)
    assert got["depth"]["abs_err"] == pytest.approx(ref.metric["depth"]["metric"][0], abs=1e-6)
    assert got["normal"]["mean_angle"] == pytest.approx(ref.metric["normal"]["metric"][0], abs=1e-6)


def test_simo_protocol_delta_mtl_equals_the_authors_all_score(nyu) -> None:
    """Eq. 2 over primary metrics against their constants: ours (%) = 100 x their "all" (a fraction)."""
    batches, ref = nyu
    got = ours(NYU_SPECS, batches, "simo")
    ours_delta = delta_mtl(got, SIMO_SINGLE_TASK["nyuv2"], metrics=PROTOCOLS["simo"].delta_metrics)
    assert ours_delta == pytest.approx(100 * ref.metric["all"][0], abs=1e-6)
    # all metrics need a baseline for every metric, which the constants do not have
    with pytest.raises(KeyError, match="pixel_acc"):
        delta_mtl(got, SIMO_SINGLE_TASK["nyuv2"], metrics="all")


def test_default_protocol_pools_pixels_masks_and_renormalises(nyu) -> None:
    """The default's documented values: depth a mean over every valid pixel of the set, normals
    renormalised over the pixels of non-zero length; both differ from SIMO's on this fixture."""
    batches, ref = nyu
    got = ours(NYU_SPECS, batches, "default")
    err = torch.cat([(p["depth"] - b["depth"]).abs()[b["depth"] > 0] for b, _, p in batches])
    assert got["depth"]["abs_err"] == pytest.approx(float(err.mean()), abs=1e-9)
    angles = []
    for b, _, p in batches:
        cos = torch.nn.functional.cosine_similarity(p["normal"], b["normal"], dim=1, eps=1e-12)
        angles.append(torch.rad2deg(torch.acos(cos.clamp(-1, 1)))[b["normal_mask"]])
    assert got["normal"]["mean_angle"] == pytest.approx(float(torch.cat(angles).mean()), abs=1e-9)
    assert abs(got["depth"]["abs_err"] - ref.metric["depth"]["metric"][0]) > 1e-3
    assert abs(got["normal"]["mean_angle"] - ref.metric["normal"]["metric"][0]) > 1e-3
    # segmentation is one confusion matrix under both: the same mIoU
    assert got["semseg"]["miou"] == pytest.approx(ours(NYU_SPECS, batches, "simo")["semseg"]["miou"])


def test_simo_disparity_counts_every_nonzero_value_and_taskonomy_semseg_class_0() -> None:
    """Cityscapes disparity: SIMO's ``sum(gt) != 0`` counts the -1 invalid marker; Taskonomy semseg: its
    confusion matrix counts class 0 though the loss (our mask) leaves it out. The default protocol
    excludes both."""
    g = torch.Generator().manual_seed(1)
    batches = []
    for n in BATCHES:
        disp = torch.rand(n, 1, H, W, generator=g, dtype=torch.float64) * 0.5
        disp[:, :, :2] = -1.0
        disp[:, :, 2, :2] = 0.0
        label = torch.randint(0, 18, (n, H, W), generator=g)
        label[:, 0] = 0
        preds = {
            "disparity": disp + torch.randn(n, 1, H, W, generator=g, dtype=torch.float64) * 0.1,
            "semseg": torch.randn(n, 18, H, W, generator=g, dtype=torch.float64),
        }
        batch = {"disparity": disp, "disparity_mask": disp[:, 0] > 0}
        batch |= {"semseg": label, "semseg_mask": label != 0}  # our Taskonomy simo mask: class 0 out
        batches.append((batch, {"disp": disp, "segment_semantic": label}, preds))
    tasks = {"disp": {"num_classes": 1}, "segment_semantic": {"num_classes": 18}}
    names = {"disp": "disparity", "segment_semantic": "semseg"}
    ref = theirs(tasks, names, batches, None)  # a mix of two data sets' tasks: no ΔMTL
    specs = {"disparity": regression("disparity"), "semseg": segmentation("semseg", 18)}
    got = ours(specs, batches, "simo")
    assert got["disparity"]["abs_err"] == pytest.approx(ref.metric["disp"]["metric"][0], abs=1e-6)
    assert got["semseg"]["miou"] / 100 == pytest.approx(ref.metric["segment_semantic"]["metric"][0], abs=1e-6)
    default = ours(specs, batches, "default")
    pooled = torch.cat([(p["disparity"] - b["disparity"]).abs()[b["disparity"] > 0] for b, _, p in batches])
    assert default["disparity"]["abs_err"] == pytest.approx(float(pooled.mean()), abs=1e-9)
    assert default["semseg"]["miou"] != pytest.approx(got["semseg"]["miou"], abs=1e-3)


def test_per_batch_mean_weights_a_short_last_batch_by_its_images() -> None:
    """The running mean with ``r = counter / (counter + curr_bs / batch_size)`` (their line 184) is the
    image-weighted mean of the batch means; a batch with no valid pixel adds nothing."""
    m = MultiTaskMetrics({"edge": regression("edge")}, aggregation="per_batch", valid_pixels="simo")
    running, counter = 0.0, 0
    for n, err in ((4, 1.0), (4, 3.0), (2, 10.0)):
        target = torch.ones(n, 1, 2, 2)
        m.update({"edge": target + err}, {"edge": target})
        r = counter / (counter + n / 4)
        running, counter = r * running + (1 - r) * err, counter + 1
    m.update({"edge": torch.ones(3, 1, 2, 2)}, {"edge": torch.zeros(3, 1, 2, 2)})  # nothing valid
    assert m.compute()["edge"]["l1"] == pytest.approx(running) == pytest.approx((4 + 12 + 20) / 10)


def test_metrics_refuse_an_unknown_aggregation_or_pixel_rule() -> None:
    with pytest.raises(ValueError, match="aggregation must be one of"):
        MultiTaskMetrics(NYU_SPECS, aggregation="mean")
    with pytest.raises(ValueError, match="valid_pixels must be one of"):
        MultiTaskMetrics(NYU_SPECS, valid_pixels="all")
