"""Tests for nerfgan.camera: upstream cameras reproduced, round trips, conventions, parsing."""

from __future__ import annotations

import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from nerfgan import camera
from nerfgan.errors import PoseError

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "eg3d_tiny_sr128.npz"
REPO = pathlib.Path(__file__).resolve().parent.parent
ATOL = 1e-6


@pytest.fixture(scope="module")
def fx():
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}


# ----- upstream cameras -------------------------------------------------------------------


def test_reproduces_render_cameras(fx):
    m = camera.look_at(fx["cam_yaw"], fx["cam_pitch"], fx["cam_radius"], fx["cam_lookat"])
    c = camera.pack(m, camera.intrinsics(float(fx["cam_focal"])))
    assert c.dtype == np.float32
    assert c.shape == fx["c"].shape
    np.testing.assert_allclose(c, fx["c"], rtol=0, atol=ATOL)


def test_reproduces_conditioning_camera(fx):
    m = camera.look_at(fx["cond_yaw"], fx["cond_pitch"], fx["cam_radius"], fx["cam_lookat"])
    c = camera.pack(m, camera.intrinsics(float(fx["cam_focal"])))
    for row in fx["c_cond"]:
        np.testing.assert_allclose(c, row, rtol=0, atol=ATOL)
        np.testing.assert_allclose(camera.frontal(), row, rtol=0, atol=ATOL)


def test_reproduces_cam_tests(fx):
    m = camera.look_at(
        fx["cam_tests/yaw"], fx["cam_tests/pitch"], fx["cam_tests/radius"], fx["cam_tests/lookat"]
    )
    assert m.dtype == np.float32
    np.testing.assert_allclose(m, fx["cam_tests/cam2world"], rtol=0, atol=ATOL)


def test_fov_to_focal_matches_upstream(fx):
    got = [camera.fov_to_focal(float(f)) for f in fx["cam_tests/fov_deg"]]
    np.testing.assert_allclose(got, fx["cam_tests/focal_from_FOV_to_intrinsics"], rtol=1e-6)


def test_fov_to_focal_documented_values():
    assert camera.fov_to_focal(18.837) == pytest.approx(4.26339, abs=1e-5)
    assert camera.fov_to_focal(18) == pytest.approx(4.46517, abs=1e-5)


@pytest.mark.parametrize("fov", [10.0, 18.0, 18.837, 30.0, 60.0])
def test_fov_focal_round_trip(fov):
    assert camera.focal_to_fov(camera.fov_to_focal(fov)) == pytest.approx(fov, rel=1e-12)
    f = camera.fov_to_focal(fov)
    assert camera.fov_to_focal(camera.focal_to_fov(f)) == pytest.approx(f, rel=1e-12)


def test_frontal_matches_facts():
    c = camera.frontal()
    expected = [1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 2.7, 0, 0, 0, 1]
    np.testing.assert_allclose(c[:16], expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(c[16:], [4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1], atol=0)


# ----- layout -----------------------------------------------------------------------------


def test_pack_unpack_round_trip():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    k = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    c = camera.pack(m, k)
    assert c.shape == (3, 2, camera.CAMERA_DIM) and c.dtype == np.float32
    np.testing.assert_array_equal(c[..., :16], m.reshape(3, 2, 16))  # row-major
    m2, k2 = camera.unpack(c)
    np.testing.assert_array_equal(m2, m)
    np.testing.assert_array_equal(k2, k)


def test_pack_broadcasts_intrinsics():
    m = camera.look_at(np.full(5, math.pi / 2), np.full(5, math.pi / 2))
    c = camera.pack(m, camera.intrinsics())
    assert c.shape == (5, 25)
    np.testing.assert_array_equal(c[:, 16:], np.tile(camera.intrinsics().ravel(), (5, 1)))


def test_unpack_rejects_wrong_last_dim():
    with pytest.raises(PoseError, match="c_cond"):
        camera.unpack(np.zeros((2, 24), np.float32), name="c_cond")
    with pytest.raises(PoseError, match=r"\(\.\.\., 25\)"):
        camera.unpack(np.zeros(16, np.float32))


def test_unpack_rejects_non_finite():
    c = camera.frontal()
    c[3] = np.nan
    with pytest.raises(PoseError, match="camera"):
        camera.unpack(c, name="camera")


def test_pack_rejects_bad_shapes():
    with pytest.raises(PoseError, match="cam2world"):
        camera.pack(np.eye(3), camera.intrinsics())
    with pytest.raises(PoseError, match="intrinsics"):
        camera.pack(np.eye(4), np.eye(4))


def test_intrinsics_layout():
    k = camera.intrinsics(2.0, (0.25, 0.75))
    assert k.dtype == np.float32
    np.testing.assert_array_equal(k, [[2, 0, 0.25], [0, 2, 0.75], [0, 0, 1]])


# ----- look_at and pose conventions -------------------------------------------------------


def test_look_at_vectorised_equals_per_item():
    rng = np.random.default_rng(1)
    yaw = rng.uniform(0.5, 2.6, (3, 4))
    pitch = rng.uniform(0.5, 2.6, (3, 4))
    radius = rng.uniform(1.0, 3.0, (3, 4))
    lookat = rng.uniform(-0.3, 0.3, (3, 4, 3))
    batch = camera.look_at(yaw, pitch, radius, lookat)
    assert batch.shape == (3, 4, 4, 4)
    for i in range(3):
        for j in range(4):
            one = camera.look_at(yaw[i, j], pitch[i, j], radius[i, j], lookat[i, j])
            assert one.shape == (4, 4)
            np.testing.assert_array_equal(batch[i, j], one)


@pytest.mark.parametrize("yaw,pitch", [(0, 0), (30, 0), (-45, 20), (120, -60), (180, 89)])
def test_camera_looks_at_pivot(yaw, pitch):
    pivot = np.array([0.1, -0.2, 0.2])
    m, _ = camera.unpack(camera.pose(yaw, pitch, radius=2.0, pivot=pivot))
    origin, forward = m[:3, 3], m[:3, 2]
    to_pivot = (pivot - origin) / np.linalg.norm(pivot - origin)
    np.testing.assert_allclose(forward, to_pivot, atol=ATOL)
    # The camera sits on a sphere around the WORLD ORIGIN, not around the pivot.
    assert np.linalg.norm(origin) == pytest.approx(2.0, abs=1e-6)
    # Rotation part is orthonormal and right-handed; last row is [0, 0, 0, 1].
    np.testing.assert_allclose(m[:3, :3].T @ m[:3, :3], np.eye(3), atol=1e-6)
    assert np.linalg.det(m[:3, :3]) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(m[3], [0, 0, 0, 1])


def test_pose_zero_is_frontal():
    np.testing.assert_array_equal(camera.pose(0, 0), camera.frontal())
    np.testing.assert_array_equal(
        camera.pose(0, 0, 1.5, (0, 0, 0), 3.0), camera.frontal(1.5, (0, 0, 0), 3.0)
    )


def test_pose_matches_absolute_angles():
    c = camera.pose(25.0, -10.0, 2.7, (0, 0, 0.2))
    m = camera.look_at(math.pi / 2 + math.radians(25), math.pi / 2 + math.radians(10))
    np.testing.assert_array_equal(c[:16], m.ravel())


def test_positive_yaw_moves_camera_to_world_plus_x():
    m, _ = camera.unpack(camera.pose(yaw_deg=30))
    assert m[0, 3] > 0.5
    assert m[1, 3] == pytest.approx(0.0, abs=1e-6)
    # The subject faces +z; seen from this camera its facing direction points image-left.
    assert m[:3, 0] @ np.array([0.0, 0.0, 1.0]) < 0


def test_positive_pitch_moves_camera_up():
    m, _ = camera.unpack(camera.pose(pitch_deg=20))
    assert m[1, 3] > 0.5
    # Camera height is linear in the pitch offset: y = radius * pitch / 90.
    assert m[1, 3] == pytest.approx(2.7 * 20 / 90, abs=1e-6)
    # Looking down: the viewing direction has a negative world-y component.
    assert m[1, 2] < 0


def test_pose_vectorised():
    yaw = np.array([-30.0, 0.0, 30.0])
    pitch = np.array([10.0, 0.0, -10.0])
    c = camera.pose(yaw, pitch)
    assert c.shape == (3, 25) and c.dtype == np.float32
    for i in range(3):
        np.testing.assert_array_equal(c[i], camera.pose(yaw[i], pitch[i]))


def test_pose_rejects_out_of_range():
    with pytest.raises(PoseError):
        camera.pose(0, 90)
    with pytest.raises(PoseError):
        camera.pose(0, 0, radius=0)


# ----- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("0,0", (0.0, 0.0, None)),
        ("30,-10", (30.0, -10.0, None)),
        (" -30.5 , 12 , 2.7 ", (-30.5, 12.0, 2.7)),
        ("180,-89.9", (180.0, -89.9, None)),
        ("-180,0,1e-3", (-180.0, 0.0, 1e-3)),
    ],
)
def test_parse_pose_good(text, expected):
    assert camera.parse_pose(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "30",
        "30,",
        "30,10,2.7,1",
        "a,b",
        "30;10",
        "nan,0",
        "0,inf",
        "0,0,nan",
        "180.5,0",
        "-181,0",
        "0,90",
        "0,-90",
        "0,0,0",
        "0,0,-1",
    ],
)
def test_parse_pose_bad(text):
    with pytest.raises(PoseError, match="--pose") as info:
        camera.parse_pose(text)
    assert repr(text) in str(info.value)


def test_check_pose_names_option():
    with pytest.raises(PoseError, match="poses"):
        camera.check_pose(np.array([0.0, 200.0]), 0.0, name="poses")
    camera.check_pose(np.array([-180.0, 180.0]), np.array([-89.0, 89.0]), 1.0)


# ----- orbit ------------------------------------------------------------------------------


def test_orbit():
    yp = camera.orbit(8, yaw_range_deg=20, pitch_range_deg=10, pitch_offset_deg=2)
    assert yp.shape == (8, 2) and yp.dtype == np.float32
    np.testing.assert_allclose(yp[0], [0, 12], atol=1e-6)
    np.testing.assert_allclose(yp[2], [20, 2], atol=1e-5)
    assert camera.pose(yp[:, 0], yp[:, 1]).shape == (8, 25)
    with pytest.raises(PoseError):
        camera.orbit(4, pitch_range_deg=100)


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_orbit_rejects_bad_n(n):
    from nerfgan.errors import UsageError

    with pytest.raises(UsageError):
        camera.orbit(n)


# ----- dependencies -----------------------------------------------------------------------


def test_import_does_not_pull_in_torch():
    code = (
        "import sys, nerfgan.camera; "
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
