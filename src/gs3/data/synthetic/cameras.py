"""Camera intrinsics and the handheld-like camera path through a room (an ellipse looking in or out)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float


def kinect_intrinsics(width: int, height: int) -> Float[np.ndarray, "3 3"]:
    """K of a Kinect-like camera (fx = fy = 585 at 640 px wide, ~57° horizontal field of view), centred."""
    focal = 585.0 * width / 640.0
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


@dataclass
class CameraPath:
    """A smooth handheld-like camera path: an ellipse around `center` (x, y) at about `height`, looking
    towards the centre (or straight away from it when `outward`) with slow sinusoidal yaw, pitch, roll and
    height wobble; `step` metres along the ellipse per frame, in direction `turn` (+1 counter-clockwise,
    -1 clockwise) from angle `start`."""

    center: Float[np.ndarray, " 2"]
    radii: Float[np.ndarray, " 2"]
    start: float
    turn: float
    step: float
    height: float
    pitch: float
    height_amplitude: float
    yaw_amplitude: float
    pitch_amplitude: float
    roll_amplitude: float
    periods: Float[np.ndarray, " 4"]  # frames, for height, yaw, pitch, roll wobble
    phases: Float[np.ndarray, " 4"]
    outward: bool = False

    def angles(self, num_frames: int) -> Float[np.ndarray, " f"]:
        """Ellipse angle of every frame, spaced `step` metres of arc apart."""
        angles = np.empty(num_frames)
        angle = self.start
        for frame in range(num_frames):
            angles[frame] = angle
            speed = math.hypot(self.radii[0] * math.sin(angle), self.radii[1] * math.cos(angle))
            angle += self.turn * self.step / speed
        return angles

    def ground_track(self, samples: int = 256) -> Float[np.ndarray, "n 2"]:
        """Points of the whole ellipse (the camera never leaves it, however many frames)."""
        angles = np.linspace(0.0, 2.0 * math.pi, samples, endpoint=False)
        return self.center + self.radii * np.stack([np.cos(angles), np.sin(angles)], axis=1)

    def poses(self, num_frames: int) -> Float[np.ndarray, "f 4 4"]:
        """Camera-to-world 4×4 of every frame (OpenCV camera axes)."""
        angles = self.angles(num_frames)
        frames = np.arange(num_frames, dtype=np.float64)
        wobble = np.sin(2.0 * math.pi * frames[:, None] / self.periods + self.phases)
        position = np.empty((num_frames, 3))
        position[:, :2] = self.center + self.radii * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        position[:, 2] = self.height + self.height_amplitude * wobble[:, 0]
        to_center = self.center - position[:, :2]
        yaw = np.arctan2(to_center[:, 1], to_center[:, 0]) + self.yaw_amplitude * wobble[:, 1]
        if self.outward:
            yaw = yaw + math.pi
        pitch = self.pitch + self.pitch_amplitude * wobble[:, 2]
        roll = self.roll_amplitude * wobble[:, 3]
        poses = np.zeros((num_frames, 4, 4))
        poses[:, :3, :3] = look_rotation(yaw, pitch, roll)
        poses[:, :3, 3] = position
        poses[:, 3, 3] = 1.0
        return poses


def look_rotation(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray | float = 0.0) -> np.ndarray:
    """Camera-to-world rotation (OpenCV axes) looking along yaw (about world +z, from +x) and pitch
    (up positive), rolled about the viewing direction; world z is up."""
    yaw, pitch = np.asarray(yaw, dtype=np.float64), np.asarray(pitch, dtype=np.float64)
    roll = np.broadcast_to(np.asarray(roll, dtype=np.float64), yaw.shape)
    forward = np.stack([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)], axis=-1)
    right = np.stack([np.sin(yaw), -np.cos(yaw), np.zeros_like(yaw)], axis=-1)  # forward × up, normalised
    down = np.cross(forward, right)
    cos, sin = np.cos(roll)[..., None], np.sin(roll)[..., None]
    right, down = cos * right + sin * down, cos * down - sin * right
    return np.stack([right, down, forward], axis=-1)


def random_camera_path(rng: np.random.Generator, size: np.ndarray) -> CameraPath:
    # Looking outward, a smaller ellipse and a steeper pitch keep the walls 1.2-3 m away with floor in view.
    outward = bool(rng.random() < 0.5)
    radius_range, pitch_range = ((0.15, 0.22), (-30.0, -15.0)) if outward else ((0.2, 0.27), (-20.0, -6.0))
    radii = rng.uniform(*radius_range, 2) * size[:2]
    # The view turns with the angle around the centre: at most ~1.3° per frame (plus the yaw wobble).
    step = min(float(rng.uniform(0.02, 0.035)), math.radians(1.3) * float(radii.min()))
    return CameraPath(
        center=size[:2] / 2 + rng.uniform(-0.05, 0.05, 2) * size[:2],
        radii=radii,
        start=float(rng.uniform(0.0, 2.0 * math.pi)),
        turn=float(rng.choice([-1.0, 1.0])),
        step=step,
        height=float(rng.uniform(1.35, 1.55)),
        pitch=float(np.deg2rad(rng.uniform(*pitch_range))),
        height_amplitude=float(rng.uniform(0.02, 0.06)),
        yaw_amplitude=float(np.deg2rad(rng.uniform(10.0, 25.0))),
        pitch_amplitude=float(np.deg2rad(rng.uniform(2.0, 6.0))),
        roll_amplitude=float(np.deg2rad(rng.uniform(0.5, 2.5))),
        periods=rng.uniform(120.0, 260.0, 4),
        phases=rng.uniform(0.0, 2.0 * math.pi, 4),
        outward=outward,
    )
