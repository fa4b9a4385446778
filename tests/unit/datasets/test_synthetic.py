"""Tests for the procedural ``synthetic_scenes`` dataset: determinism, geometry, caching, interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simo_merge.datasets import DATASETS, build_dataset, synthetic
from simo_merge.datasets import _raycast as rc
from simo_merge.datasets.synthetic import SyntheticScenes, generate_sample, generate_scene
from simo_merge.datasets.transforms import JointTransform, to_sample


def _material(rgb=(0.5, 0.5, 0.5)) -> rc.Material:
    return rc.Material(
        rc.PATTERN_SOLID, np.array(rgb), np.array(rgb), 0.5, 0.0, np.zeros((1, 4)), np.zeros(2)
    )


def _hand_scene(objects: list[rc.Obj]) -> rc.Scene:
    """Room [-3,3]x[0,3]x[0,6]; camera at (0,1,0.5) looking along +z with a 90 degree field of view."""
    cam = rc.Camera(np.array([0.0, 1.0, 0.5]), np.diag([1.0, -1.0, 1.0]), np.pi / 2)
    return rc.Scene(
        xmin=-3.0,
        xmax=3.0,
        height=3.0,
        zmax=6.0,
        camera=cam,
        room_materials=[_material() for _ in range(6)],
        objects=objects,
        lights=[(np.array([0.0, 2.5, 3.0]), np.ones(3))],
        ambient=np.full(3, 0.1),
        exposure=3.0,
        noise_sigma=0.0,
    )


def _backproject(depth: np.ndarray, K: np.ndarray, rotation: np.ndarray, position: np.ndarray) -> np.ndarray:
    """World points (H, W, 3) of every pixel centre from z-depth and the camera."""
    h, w = depth.shape
    vv, uu = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    ray = np.stack([(uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], np.ones_like(uu)], -1)
    return (ray * depth[..., None].astype(np.float64)) @ rotation.T + position


# --------------------------------------------------------------------------------------- hand-built scene


def test_hand_built_scene_exact_values():
    sphere = rc.Obj(rc.SPHERE, 0.0, 4.0, (1.0, 1.0, 1.0), 0.0, _material())
    out = rc.render(_hand_scene([sphere]), 33, 33)
    # f = 16.5 px. Centre ray (row 16, col 16) runs along +z at height 1: hits the sphere at z = 3.
    assert out["semseg"][16, 16] == rc.SPHERE
    assert out["depth"][16, 16] == pytest.approx(2.5, abs=1e-6)
    np.testing.assert_allclose(out["normal"][16, 16], [0.0, 0.0, -1.0], atol=1e-6)
    # Bottom row, centre column: y_n = 16 / 16.5, floor hit at t = 1 / y_n = 1.03125.
    assert out["semseg"][32, 16] == rc.FLOOR
    assert out["depth"][32, 16] == pytest.approx(1.03125, abs=1e-6)
    np.testing.assert_allclose(out["normal"][32, 16], [0.0, -1.0, 0.0], atol=1e-6)  # floor normal points up
    # Top row: ceiling (height 3, 2 m above the camera) at t = 2 / (16 / 16.5) = 2.0625.
    assert out["semseg"][0, 16] == rc.CEILING
    assert out["depth"][0, 16] == pytest.approx(2.0625, abs=1e-6)
    np.testing.assert_allclose(out["normal"][0, 16], [0.0, 1.0, 0.0], atol=1e-6)
    # Leftmost column, middle row: left wall x = -3 at t = 3 / (16 / 16.5) = 3.09375; normal points right.
    assert out["semseg"][16, 0] == rc.WALL
    assert out["depth"][16, 0] == pytest.approx(3.09375, abs=1e-6)
    np.testing.assert_allclose(out["normal"][16, 0], [1.0, 0.0, 0.0], atol=1e-6)
    # Edges: none inside the flat floor, one where the sphere's silhouette meets the back wall.
    assert out["edge"][28:, 10:23].sum() == 0
    row = out["semseg"][16]
    j = int(np.nonzero(row == rc.SPHERE)[0].max())
    assert out["edge"][16, j] == 1 and out["edge"][16, j + 1] == 1
    assert out["edge"][16, 16] == 0
    assert out["image"].dtype == np.uint8 and out["image"].shape == (33, 33, 3)


def test_yawed_box_and_cylinder_geometry():
    box = rc.Obj(rc.BOX, -1.0, 3.5, (0.5, 0.6, 0.4), np.pi / 6, _material())
    cyl = rc.Obj(rc.CYLINDER, 1.2, 3.0, (0.4, 0.7, 0.4), 0.0, _material())
    scene = _hand_scene([box, cyl])
    out = rc.render(scene, 48, 48)
    cam = scene.camera
    p = _backproject(out["depth"], cam.intrinsics(48, 48), cam.rotation, cam.position)
    n_world = out["normal"] @ cam.rotation.T
    inst = out["instance"]
    mb = inst == rc.NUM_ROOM_SURFACES
    mc = inst == rc.NUM_ROOM_SURFACES + 1
    assert mb.sum() > 20 and mc.sum() > 20
    # Box pixels lie on the box surface: in the box frame the largest |coord| / half-extent is exactly 1.
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    q = p[mb] - np.array([-1.0, 0.6, 3.5])
    local = np.stack([c * q[:, 0] - s * q[:, 2], q[:, 1], s * q[:, 0] + c * q[:, 2]], 1) / [0.5, 0.6, 0.4]
    np.testing.assert_allclose(np.abs(local).max(1), 1.0, atol=1e-4)
    # ... and the normal is the face normal: the yaw-rotated axis of that largest coordinate.
    axis = np.abs(local).argmax(1)
    sign = np.sign(local[np.arange(len(axis)), axis])
    faces = np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])  # local axes in the world
    np.testing.assert_allclose(n_world[mb], faces[axis] * sign[:, None], atol=1e-5)
    # Cylinder pixels: on the side (radius 0.4, horizontal normal) or on the top cap (y = 0.7, normal up).
    q = p[mc] - np.array([1.2, 0.0, 3.0])
    radial = np.hypot(q[:, 0], q[:, 2])
    cap = n_world[mc][:, 1] > 0.5
    np.testing.assert_allclose(q[cap, 1], 0.7, atol=1e-4)
    assert np.all(radial[cap] <= 0.4 + 1e-4)
    np.testing.assert_allclose(radial[~cap], 0.4, atol=1e-4)
    np.testing.assert_allclose(n_world[mc][~cap][:, [0, 2]], q[~cap][:, [0, 2]] / 0.4, atol=1e-3)
    assert cap.any() and (~cap).any()  # the camera (1 m high) sees the 0.7 m cap and the side


# ------------------------------------------------------------------------------------------ determinism


def test_samples_are_pure_functions_of_seed_split_index_size():
    a = generate_sample(0, "train", 5, (32, 40))
    b = generate_sample(0, "train", 5, (32, 40))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    other_seed = generate_sample(1, "train", 5, (32, 40))
    other_split = generate_sample(0, "val", 5, (32, 40))
    other_index = generate_sample(0, "train", 6, (32, 40))
    for other in (other_seed, other_split, other_index):
        assert not np.array_equal(a["depth"], other["depth"])
        assert not np.array_equal(a["image"], other["image"])
    # The scene does not depend on the resolution: same camera at another size.
    c = generate_sample(0, "train", 5, (16, 20))
    np.testing.assert_array_equal(a["rotation"], c["rotation"])
    assert c["focal"] == pytest.approx(a["focal"] / 2)
    # A sample does not depend on the split size nor on the storage mode.
    small = SyntheticScenes(split="val", num_samples=3, size=(24, 24))
    large = SyntheticScenes(split="val", num_samples=6, size=(24, 24), in_memory=False)
    for key, value in small[2].items():
        torch.testing.assert_close(value, large[2][key], rtol=0, atol=0, msg=key)


def test_splits_use_disjoint_streams():
    scenes = {
        s: [generate_scene(0, s, i).camera.position.tobytes() for i in range(20)]
        for s in ("train", "val", "test")
    }
    all_positions = scenes["train"] + scenes["val"] + scenes["test"]
    assert len(set(all_positions)) == 60


# ------------------------------------------------------------------------------------------- geometry


def test_shapes_dtypes_and_masks():
    ds = SyntheticScenes(split="test", num_samples=2, size=(24, 40))
    assert len(ds) == 2 and ds.num_classes == 6 and ds.tasks == list(synthetic.SUPPORTED_TASKS)
    s = ds[1]
    assert s["image"].shape == (3, 24, 40) and s["image"].dtype == torch.float32
    assert 0.0 <= s["image"].min() and s["image"].max() <= 1.0
    assert s["semseg"].shape == (24, 40) and s["semseg"].dtype == torch.int64
    assert s["depth"].shape == (1, 24, 40) and s["depth"].dtype == torch.float32
    assert s["normal"].shape == (3, 24, 40) and s["normal"].dtype == torch.float32
    assert s["edge"].shape == (1, 24, 40) and set(s["edge"].unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(s["autoencoding"], s["image"])
    for task in ds.tasks:
        assert s[f"{task}_mask"].dtype == torch.bool and bool(s[f"{task}_mask"].all())
    assert ds.task_specs["semseg"].channels == 6 and ds.task_specs["normal"].kind == "normals"
    # The fast tensor path agrees with the generic numpy -> to_sample path.
    ref = to_sample(ds.arrays(1), ds.tasks)
    assert ref.keys() == s.keys()
    for key in ref:
        torch.testing.assert_close(ref[key], s[key], rtol=0, atol=0, msg=key)
    only = SyntheticScenes(split="test", num_samples=2, size=(24, 40), tasks=["depth"])
    assert set(only[0]) == {"image", "depth", "depth_mask"}


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_geometry_is_consistent(index):
    ds_scene = generate_scene(0, "val", index)
    out = rc.render(ds_scene, 40, 48)
    sample = generate_sample(0, "val", index, (40, 48))
    np.testing.assert_array_equal(out["depth"], sample["depth"])
    depth, normal, inst = out["depth"], out["normal"], out["instance"]
    cam = ds_scene.camera
    K = cam.intrinsics(40, 48)
    assert np.all(depth > 0) and np.all(np.isfinite(depth))
    np.testing.assert_allclose(np.linalg.norm(normal, axis=-1), 1.0, atol=1e-5)
    vv, uu = np.meshgrid(np.arange(40) + 0.5, np.arange(48) + 0.5, indexing="ij")
    ray = np.stack([(uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], np.ones_like(uu)], -1)
    assert np.all((normal * ray).sum(-1) < 0)  # every normal faces the camera
    p = _backproject(depth, K, cam.rotation, cam.position)
    sem = out["semseg"]
    np.testing.assert_allclose(p[sem == rc.FLOOR][:, 1], 0.0, atol=1e-4)
    np.testing.assert_allclose(p[sem == rc.CEILING][:, 1], ds_scene.height, atol=1e-4)
    walls = p[sem == rc.WALL]
    dist_to_wall = np.min(
        np.abs(
            np.stack(
                [
                    walls[:, 0] - ds_scene.xmin,
                    walls[:, 0] - ds_scene.xmax,
                    walls[:, 2],
                    walls[:, 2] - ds_scene.zmax,
                ]
            )
        ),
        axis=0,
    )
    np.testing.assert_allclose(dist_to_wall, 0.0, atol=1e-4)
    n_world = normal @ cam.rotation.T
    for k, ob in enumerate(ds_scene.objects):
        m = inst == rc.NUM_ROOM_SURFACES + k
        if ob.kind == rc.SPHERE and m.any():
            centre = np.array([ob.x, ob.size[0], ob.z])
            np.testing.assert_allclose(np.linalg.norm(p[m] - centre, axis=-1), ob.size[0], atol=1e-4)
            np.testing.assert_allclose(n_world[m], (p[m] - centre) / ob.size[0], atol=2e-3)
    # Edges: both sides of every instance change along rows and columns.
    e = out["edge"].astype(bool)
    dx = inst[:, 1:] != inst[:, :-1]
    dy = inst[1:] != inst[:-1]
    assert e[:, 1:][dx].all() and e[:, :-1][dx].all() and e[1:][dy].all() and e[:-1][dy].all()


def test_class_set_and_difficulty():
    sems = np.stack([generate_sample(0, "val", i, (32, 32))["semseg"] for i in range(30)])
    assert set(np.unique(sems).tolist()) == set(range(6))
    assert all((s == rc.FLOOR).any() and (s == rc.WALL).any() for s in sems)
    objects = np.isin(sems, [rc.BOX, rc.SPHERE, rc.CYLINDER])
    assert objects.any(axis=(1, 2)).sum() >= 25 and objects.mean() > 0.05
    # Colour does not give the class: the class explains a small part of the per-pixel colour variance.
    imgs = (
        np.stack([generate_sample(0, "val", i, (32, 32))["image"] for i in range(30)]).reshape(-1, 3) / 255.0
    )
    labels = sems.ravel()
    weights = np.bincount(labels, minlength=6) / labels.size
    means = np.stack([imgs[labels == k].mean(0) for k in range(6)])
    between = (weights[:, None] * (means - imgs.mean(0)) ** 2).sum(0)
    within = sum(weights[k] * imgs[labels == k].var(0) for k in range(6))
    assert np.all(between / within < 0.25), between / within


# --------------------------------------------------------------------------------------------- caching


def test_disk_cache_round_trip(tmp_path, monkeypatch):
    kwargs = dict(split="val", num_samples=4, size=(20, 28), seed=3)
    fresh = SyntheticScenes(**kwargs)
    cached = SyntheticScenes(cache_dir=tmp_path / "cache", **kwargs)
    path = cached.cache_path()
    assert path.exists() and path.parent == tmp_path / "cache"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    # A second construction must read the file, not regenerate.
    monkeypatch.setattr(synthetic, "generate_split", lambda *a, **k: pytest.fail("regenerated"))
    reloaded = SyntheticScenes(cache_dir=tmp_path / "cache", **kwargs)
    for i in range(4):
        for key, value in fresh[i].items():
            torch.testing.assert_close(reloaded[i][key], value, rtol=0, atol=0, msg=key)
            torch.testing.assert_close(cached[i][key], value, rtol=0, atol=0, msg=key)
    # Every generation parameter is part of the key.
    monkeypatch.undo()
    for change in (
        dict(seed=4),
        dict(num_samples=5),
        dict(size=(20, 30)),
        dict(split="test"),
        dict(antialias=2),
    ):
        other = SyntheticScenes(cache_dir=tmp_path / "cache", **{**kwargs, **change})
        assert other.cache_path() != path


def test_corrupt_cache_is_regenerated(tmp_path):
    kwargs = dict(split="test", num_samples=2, size=(16, 16), cache_dir=tmp_path)
    path = SyntheticScenes(**kwargs).cache_path()
    path.write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="unreadable cache"):
        ds = SyntheticScenes(**kwargs)
    np.testing.assert_array_equal(ds[1]["depth"][0].numpy(), generate_sample(0, "test", 1, (16, 16))["depth"])
    with np.load(path) as z:  # rewritten with valid content
        assert z["depth"].shape == (2, 16, 16)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match="file"):
        SyntheticScenes(split="test", num_samples=1, size=(8, 8), cache_dir=blocker)


def test_parallel_generation_matches_serial():
    serial = synthetic.generate_split(0, "test", 64, (12, 12))
    parallel = synthetic.generate_split(0, "test", 64, (12, 12), num_workers=2)
    for key in serial:
        np.testing.assert_array_equal(serial[key], parallel[key], err_msg=key)


# ------------------------------------------------------------------------------------------- interface


def test_transform_receives_numpy_arrays():
    seen = {}

    def flip(arrays):
        seen.update({k: (v.dtype, v.shape) for k, v in arrays.items()})
        return {k: np.ascontiguousarray(v[:, ::-1]) for k, v in arrays.items()}

    ds = SyntheticScenes(split="val", num_samples=2, size=(16, 24), transform=flip)
    plain = SyntheticScenes(split="val", num_samples=2, size=(16, 24))
    assert seen == {}  # nothing transformed before the first access
    s, ref = ds[0], plain[0]
    assert seen["image"] == (np.float32, (16, 24, 3))
    assert seen["semseg"] == (np.int64, (16, 24)) and seen["normal"] == (np.float32, (16, 24, 3))
    assert seen["depth_mask"] == (np.bool_, (16, 24)) and "autoencoding" not in seen
    torch.testing.assert_close(s["image"], ref["image"].flip(-1))
    torch.testing.assert_close(s["autoencoding"], s["image"])
    torch.testing.assert_close(s["depth"], ref["depth"].flip(-1))
    resized = SyntheticScenes(
        split="val", num_samples=1, size=(16, 24), transform=JointTransform(size=(32, 48))
    )
    out = resized[0]
    assert out["image"].shape == (3, 32, 48) and out["semseg"].shape == (32, 48)
    torch.testing.assert_close(out["normal"].norm(dim=0), torch.ones(32, 48), atol=1e-4, rtol=0)


def test_registry_and_bad_input():
    assert DATASETS.get("synthetic_scenes") is SyntheticScenes
    ds = build_dataset("synthetic_scenes", root="/nonexistent", split="test", num_samples=3, size=16)
    assert ds.size == (16, 16) and len(ds) == 3 and ds[-1]["image"].shape == (3, 16, 16)
    assert SyntheticScenes(split="train", in_memory=False).num_samples == 2000
    assert SyntheticScenes(split="val", in_memory=False).num_samples == 200
    with pytest.raises(IndexError, match="3"):
        ds[3]
    with pytest.raises(ValueError, match="'holdout'"):
        SyntheticScenes(split="holdout", num_samples=1)
    with pytest.raises(ValueError, match="'segm'"):
        SyntheticScenes(tasks=["segm"], num_samples=1)
    with pytest.raises(ValueError, match="seed"):
        SyntheticScenes(seed=-1, num_samples=1)
    with pytest.raises(ValueError, match="num_samples"):
        SyntheticScenes(num_samples=0)
    with pytest.raises(ValueError, match="size"):
        SyntheticScenes(size=(1, 64), num_samples=1)


def test_a_split_is_a_function_of_seed_split_and_index():
    """Generating twice gives the same arrays; another seed or split gives other scenes; a prefix of a longer
    split is the shorter split (sample i depends only on (seed, split, i)).

    Generation speed is printed by benchmarks/synthetic_speed.py, not timed here."""
    first = synthetic.generate_split(0, "train", 6, (16, 16))
    again = synthetic.generate_split(0, "train", 6, (16, 16))
    longer = synthetic.generate_split(0, "train", 9, (16, 16))
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
        np.testing.assert_array_equal(first[key], longer[key][:6])
    other_seed = synthetic.generate_split(1, "train", 6, (16, 16))
    other_split = synthetic.generate_split(0, "val", 6, (16, 16))
    assert not np.array_equal(first["image"], other_seed["image"])
    assert not np.array_equal(first["image"], other_split["image"])
