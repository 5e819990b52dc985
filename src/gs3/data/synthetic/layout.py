"""Room building: the shell (floor, ceiling, walls), then a door, windows and pictures on the walls, a table
with chairs in the middle and furniture along the walls, every floor footprint clear of the others and of
the camera path."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from . import furniture
from .cameras import CameraPath, random_camera_path
from .furniture import Template, palette_material
from .labels import CLASS_IDS
from .room import Materials, Room, yaw_matrices

_SHELL_THICKNESS = 0.1  # m; floor, ceiling and wall slabs
# m; no furniture footprint comes closer than this to the camera's ground track (low furniture: the second)
_CAMERA_CLEARANCE, _CAMERA_CLEARANCE_LOW, _LOW_FURNITURE = 0.35, 0.1, 1.0


class _RoomBuilder:
    """Accumulates boxes, materials and occupied floor footprints while a room is generated."""

    def __init__(self, rng: np.random.Generator, size: np.ndarray, keep_out: np.ndarray) -> None:
        self.rng = rng
        self.size = size
        self.keep_out = keep_out
        self.boxes: list[tuple[np.ndarray, np.ndarray, float, int, int, int]] = []
        self.materials: list[tuple[int, np.ndarray, np.ndarray, float, np.ndarray, int]] = []
        self.instance_semantic: dict[int, int] = {}
        self.footprints: list[tuple[np.ndarray, np.ndarray, float]] = []
        self.wall_spans: dict[int, list[tuple[float, float]]] = {wall: [] for wall in range(4)}

    def material(self, palette: str) -> int:
        kind, color_a, color_b, scale = palette_material(self.rng, palette)
        direction = self.rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        seed = int(self.rng.integers(0, 2**31))
        self.materials.append((kind, np.clip(color_a, 0, 1), np.clip(color_b, 0, 1), scale, direction, seed))
        return len(self.materials) - 1

    def new_instance(self, semantic: str) -> int:
        instance = len(self.instance_semantic) + 1
        self.instance_semantic[instance] = CLASS_IDS[semantic]
        return instance

    def add_box(self, center, half, yaw: float, instance: int, material: int) -> None:
        semantic = self.instance_semantic[instance]
        self.boxes.append(
            (np.asarray(center, float), np.asarray(half, float), yaw, semantic, instance, material)
        )

    def fits(
        self, position: np.ndarray, half: np.ndarray, yaw: float, clearance: float, margin: float = 0.03
    ) -> bool:
        """Whether a floor footprint lies in the room, `clearance` from the camera track and clear of other
        footprints."""
        corners = (
            position + np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half @ yaw_matrices(yaw)[:2, :2].T
        )
        if np.any(corners < 0.0) or np.any(corners > self.size[:2]):
            return False
        if np.min(_point_rect_distance(self.keep_out, position, half, yaw)) < clearance:
            return False
        return not any(
            _rects_overlap(position, half + margin, yaw, other_pos, other_half, other_yaw)
            for other_pos, other_half, other_yaw in self.footprints
        )

    def place(self, template: Template, position: np.ndarray, yaw: float) -> int | None:
        """Add an object if its footprint fits; returns its instance id."""
        half = np.asarray(template.footprint, float)
        top = max(center[2] + half_size[2] for center, half_size, _ in template.parts)
        # The camera stays above 1.3 m: low furniture may pass under it, tall furniture keeps its distance.
        clearance = _CAMERA_CLEARANCE if top > _LOW_FURNITURE else _CAMERA_CLEARANCE_LOW
        if not self.fits(position, half, yaw, clearance):
            return None
        self.footprints.append((position, half, yaw))
        return self.add_object(template, position, yaw)

    def add_object(self, template: Template, position: np.ndarray, yaw: float) -> int:
        instance = self.new_instance(template.semantic)
        materials = {key: self.material(palette) for key, palette in template.palettes.items()}
        rotation = yaw_matrices(yaw)
        for center, half, key in template.parts:
            world = rotation @ np.asarray(center, float) + np.array([position[0], position[1], 0.0])
            self.add_box(world, half, yaw, instance, materials[key])
        return instance

    def build(self) -> Room:
        centers, halves, yaws, semantic, instance, material = zip(*self.boxes)
        kind, color_a, color_b, scale, direction, seed = zip(*self.materials)
        return Room(
            size=self.size.copy(),
            centers=np.stack(centers),
            half_sizes=np.stack(halves),
            yaws=np.array(yaws, dtype=np.float64),
            box_semantic=np.array(semantic, dtype=np.int64),
            box_instance=np.array(instance, dtype=np.int64),
            box_material=np.array(material, dtype=np.int64),
            materials=Materials(
                kind=np.array(kind, dtype=np.int64),
                colors=np.stack([np.stack(color_a), np.stack(color_b)], axis=1),
                scale=np.array(scale, dtype=np.float64),
                direction=np.stack(direction),
                seed=np.array(seed, dtype=np.int64),
            ),
            instance_semantic=dict(self.instance_semantic),
        )


def _point_rect_distance(points: np.ndarray, center: np.ndarray, half: np.ndarray, yaw: float) -> np.ndarray:
    local = (points - center) @ yaw_matrices(yaw)[:2, :2]
    return np.linalg.norm(np.clip(np.abs(local) - half, 0.0, None), axis=1)


def _rects_overlap(pos_a, half_a, yaw_a, pos_b, half_b, yaw_b) -> bool:
    """Separating-axis test of two oriented rectangles."""
    axes_a, axes_b = yaw_matrices(yaw_a)[:2, :2], yaw_matrices(yaw_b)[:2, :2]
    offset = pos_b - pos_a
    for axis in np.concatenate([axes_a.T, axes_b.T]):
        radius_a = np.sum(np.abs(axis @ axes_a) * half_a)
        radius_b = np.sum(np.abs(axis @ axes_b) * half_b)
        if abs(offset @ axis) > radius_a + radius_b:
            return False
    return True


# Wall k: its inner face, the inward normal (x, y), and the yaw that turns an object's +y front inward.
def _wall_frame(wall: int, size: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(start point of the wall's inner face, direction along it, inward normal, yaw) for wall 0..3."""
    sx, sy = size[0], size[1]
    frames = {
        0: ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), 0.0),
        1: ((sx, 0.0), (0.0, 1.0), (-1.0, 0.0), math.pi / 2),
        2: ((sx, sy), (-1.0, 0.0), (0.0, -1.0), math.pi),
        3: ((0.0, sy), (0.0, -1.0), (1.0, 0.0), -math.pi / 2),
    }
    start, along, inward, yaw = frames[wall]
    return np.array(start), np.array(along), np.array(inward), yaw


def _wall_length(wall: int, size: np.ndarray) -> float:
    return float(size[0] if wall in (0, 2) else size[1])


def _add_shell(builder: _RoomBuilder) -> None:
    """Floor, ceiling and four walls as slabs around the interior, overlapping at the edges (no gaps)."""
    sx, sy, sz = builder.size
    t = _SHELL_THICKNESS
    floor = builder.new_instance("floor")
    builder.add_box(
        (sx / 2, sy / 2, -t / 2), (sx / 2 + t, sy / 2 + t, t / 2), 0.0, floor, builder.material("floor")
    )
    ceiling = builder.new_instance("ceiling")
    builder.add_box(
        (sx / 2, sy / 2, sz + t / 2),
        (sx / 2 + t, sy / 2 + t, t / 2),
        0.0,
        ceiling,
        builder.material("ceiling"),
    )
    wall_paint = builder.material("wall")
    walls = [
        ((sx / 2, -t / 2, sz / 2), (sx / 2 + t, t / 2, sz / 2 + t)),
        ((sx + t / 2, sy / 2, sz / 2), (t / 2, sy / 2 + t, sz / 2 + t)),
        ((sx / 2, sy + t / 2, sz / 2), (sx / 2 + t, t / 2, sz / 2 + t)),
        ((-t / 2, sy / 2, sz / 2), (t / 2, sy / 2 + t, sz / 2 + t)),
    ]
    accent_wall = int(builder.rng.integers(0, 4)) if builder.rng.random() < 0.4 else -1
    for wall, (center, half) in enumerate(walls):
        material = builder.material("wall") if wall == accent_wall else wall_paint
        builder.add_box(center, half, 0.0, builder.new_instance("wall"), material)


def _against_wall(builder: _RoomBuilder, template: Template, wall: int, along: float, gap: float = 0.01):
    """Position and yaw of an object whose back touches the inner face of `wall` at `along` metres."""
    start, direction, inward, yaw = _wall_frame(wall, builder.size)
    position = start + along * direction + inward * (template.footprint[1] + gap)
    return position, yaw


def _free_span(builder: _RoomBuilder, wall: int, low: float, high: float) -> bool:
    return all(high <= a or low >= b for a, b in builder.wall_spans[wall])


def _place_on_wall(builder: _RoomBuilder, make: Callable[[], Template], floor: bool, tries: int = 20):
    """Try random spots along random walls; floor objects must fit their footprint, wall objects only
    need a free span of wall. Returns (template, position, yaw, instance) or None."""
    rng = builder.rng
    for _ in range(tries):
        template = make()
        wall = int(rng.integers(0, 4))
        half_width = template.footprint[0]
        length = _wall_length(wall, builder.size)
        if length < 2 * half_width + 0.1:
            continue
        along = float(rng.uniform(half_width + 0.05, length - half_width - 0.05))
        position, yaw = _against_wall(
            builder, template, wall, along, gap=rng.uniform(0.01, 0.05) if floor else 0.0
        )
        if floor:
            instance = builder.place(template, position, yaw)
            if instance is not None:
                return template, position, yaw, instance
        elif _free_span(builder, wall, along - half_width - 0.05, along + half_width + 0.05):
            builder.wall_spans[wall].append((along - half_width, along + half_width))
            return template, position, yaw, builder.add_object(template, position, yaw)
    return None


def generate_room(rng: np.random.Generator) -> tuple[Room, CameraPath]:
    """A random furnished room and the camera path through it (furniture keeps clear of the path)."""
    size = np.array([rng.uniform(4.0, 7.5), rng.uniform(4.0, 7.5), rng.uniform(2.5, 3.0)])
    path = random_camera_path(rng, size)
    builder = _RoomBuilder(rng, size, path.ground_track())
    _add_shell(builder)

    # The door first: its swing area is a reserved footprint, so nothing blocks it.
    door = _place_on_wall(builder, lambda: furniture.door(rng), floor=False)
    if door is not None:
        template, position, yaw, _ = door
        inward = yaw_matrices(yaw)[:2, :2] @ np.array([0.0, 1.0])
        builder.footprints.append(
            (position + inward * 0.45, np.array([template.footprint[0] + 0.05, 0.45]), yaw)
        )
    for _ in range(int(rng.integers(0, 3))):
        sill = float(rng.uniform(0.8, 1.0))
        _place_on_wall(builder, lambda sill=sill: furniture.window(rng, sill), floor=False)
    for _ in range(int(rng.integers(0, 4))):
        height = float(rng.uniform(1.3, min(1.7, size[2] - 0.5)))
        _place_on_wall(builder, lambda height=height: furniture.picture(rng, height), floor=False)

    # A table with chairs in the middle, inside the camera ellipse.
    if rng.random() < 0.6:
        for _ in range(10):
            table = furniture.table(rng, small=True)
            yaw = float(rng.uniform(-0.4, 0.4)) + (math.pi / 2 if rng.random() < 0.5 else 0.0)
            if builder.place(table, path.center.copy(), yaw) is None:
                continue
            rotation = yaw_matrices(yaw)[:2, :2]
            for side in range(4):
                if rng.random() < 0.35:
                    continue
                chair = furniture.chair(rng)
                # Chair front (+y) faces the table: side 0 is the table's -y side, then counter-clockwise.
                out = np.array([(0.0, -1.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0)][side])
                reach = table.footprint[1] if side % 2 == 0 else table.footprint[0]
                offset = out * (reach + chair.footprint[1] + 0.05) + rng.uniform(-0.1, 0.1) * out[::-1]
                chair_yaw = yaw + math.atan2(-out[0], out[1]) + math.pi + float(rng.uniform(-0.2, 0.2))
                builder.place(chair, path.center + rotation @ offset, chair_yaw)
            break

    makers: list[tuple[str, float]] = [
        ("bookshelf", 1.5),
        ("cabinet", 1.5),
        ("bed", 0.8),
        ("sofa", 1.0),
        ("desk", 1.0),
        ("counter", 0.6),
        ("refrigerator", 0.4),
        ("otherfurniture", 1.2),
    ]
    names, weights = zip(*makers)
    probabilities = np.array(weights) / sum(weights)
    for _ in range(int(rng.integers(4, 10))):
        name = str(rng.choice(names, p=probabilities))
        _add_wall_furniture(builder, name)
    room = builder.build()
    return room, path


def _add_wall_furniture(builder: _RoomBuilder, name: str) -> None:
    rng = builder.rng
    if name == "bookshelf":
        shelves: list[list[Template]] = []

        def make() -> Template:
            shelf, rows = furniture.bookshelf(rng)
            shelves.append(rows)
            return shelf

        placed = _place_on_wall(builder, make, floor=True)
        if placed is not None:
            _, position, yaw, _ = placed
            for row in shelves[-1]:
                builder.add_object(row, position, yaw)
        return
    makers: dict[str, Callable[[], Template]] = {
        "cabinet": lambda: furniture.cabinet(rng),
        "counter": lambda: furniture.cabinet(rng, "counter"),
        "refrigerator": lambda: furniture.cabinet(rng, "refrigerator"),
        "otherfurniture": lambda: furniture.cabinet(rng, "otherfurniture"),
        "bed": lambda: furniture.bed(rng),
        "sofa": lambda: furniture.sofa(rng),
        "desk": lambda: furniture.table(rng, "desk"),
    }
    placed = _place_on_wall(builder, makers[name], floor=True)
    if placed is not None and name == "desk" and rng.random() < 0.8:
        template, position, yaw, _ = placed
        chair = furniture.chair(rng)
        inward = yaw_matrices(yaw)[:2, :2] @ np.array([0.0, 1.0])
        chair_position = position + inward * (template.footprint[1] + chair.footprint[1] + 0.05)
        builder.place(chair, chair_position, yaw + math.pi + float(rng.uniform(-0.3, 0.3)))
