"""Furniture templates (tables, chairs, bookshelves with books, cabinets, beds, sofas, doors, windows,
pictures): boxes in the object's own frame with dimensions drawn from a random generator, and the
palettes their materials are drawn from."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .room import CHECKER, NOISE, PLAIN, PLANKS, STRIPES, TILES

Part = tuple[Sequence[float], Sequence[float], str]  # (centre, half size) in the object frame, material key


@dataclass
class Template:
    """An object in its own frame: floor at z = 0, back at -y (against a wall), front towards +y."""

    semantic: str
    parts: list[Part]
    palettes: dict[str, str]  # material key → palette name
    footprint: tuple[float, float]  # half extents (x, y) on the floor


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)))


def palette_material(rng: np.random.Generator, palette: str) -> tuple[int, np.ndarray, np.ndarray, float]:
    """(kind, colour a, colour b, feature size) for a named palette."""
    u = rng.uniform
    if palette == "wood":
        base = _hsv(u(0.05, 0.11), u(0.35, 0.7), u(0.3, 0.75))
        kind = int(rng.choice([PLANKS, STRIPES, NOISE]))
        return kind, base, base * u(0.55, 0.8), u(0.06, 0.15) if kind == PLANKS else u(0.02, 0.06)
    if palette == "fabric":
        base = _hsv(u(), u(0.15, 0.65), u(0.3, 0.85))
        kind = int(rng.choice([NOISE, NOISE, STRIPES, CHECKER]))
        other = base * u(0.6, 0.85) if kind == NOISE else _hsv(u(), u(0.1, 0.6), u(0.4, 0.95))
        return kind, base, other, u(0.03, 0.08) if kind == NOISE else u(0.06, 0.2)
    if palette == "paint":
        base = _hsv(u(), u(0.0, 0.45), u(0.35, 0.95))
        return int(rng.choice([PLAIN, NOISE])), base, base * u(0.75, 0.95), u(0.1, 0.4)
    if palette == "metal":
        grey = u(0.15, 0.75)
        return PLAIN, np.full(3, grey), np.full(3, grey * 0.9), 0.05
    if palette == "wall":
        base = _hsv(u(), u(0.0, 0.18), u(0.72, 0.95))
        kind = int(rng.choice([PLAIN, PLAIN, STRIPES, NOISE]))
        return kind, base, base * u(0.8, 0.93), u(0.08, 0.3) if kind == STRIPES else u(0.3, 1.0)
    if palette == "floor":
        kind = int(rng.choice([PLANKS, TILES, CHECKER, NOISE]))
        base = (
            _hsv(u(0.04, 0.12), u(0.2, 0.6), u(0.35, 0.8))
            if kind == PLANKS
            else _hsv(u(), u(0, 0.35), u(0.3, 0.9))
        )
        other = base * u(0.4, 0.7) if kind in (PLANKS, TILES) else _hsv(u(), u(0, 0.4), u(0.2, 0.9))
        return (
            kind,
            base,
            other,
            {PLANKS: u(0.1, 0.2), TILES: u(0.3, 0.6), CHECKER: u(0.3, 0.5)}.get(kind, 0.1),
        )
    if palette == "ceiling":
        grey = u(0.85, 0.97)
        return PLAIN, np.full(3, grey), np.full(3, grey * 0.95), 0.5
    if palette == "glass":
        base = _hsv(u(0.52, 0.62), u(0.1, 0.35), u(0.85, 1.0))
        return NOISE, base, base * u(0.8, 0.95), u(0.2, 0.5)
    if palette == "art":
        kind = int(rng.choice([NOISE, CHECKER, STRIPES]))
        return kind, _hsv(u(), u(0.4, 0.9), u(0.4, 1.0)), _hsv(u(), u(0.4, 0.9), u(0.2, 0.9)), u(0.03, 0.12)
    if palette == "stone":
        base = _hsv(u(), u(0.0, 0.2), u(0.2, 0.9))
        return NOISE, base, base * u(0.5, 0.8), u(0.01, 0.04)
    raise ValueError(f"unknown palette {palette!r}")


# Object templates: dimensions drawn from `rng`; parts in the object frame (see Template).


def table(rng: np.random.Generator, kind: str = "table", small: bool = False) -> Template:
    w, d, h = rng.uniform(0.8, 1.6), rng.uniform(0.6, 1.0), rng.uniform(0.7, 0.78)
    if small:  # coffee / side table in the middle of the room
        w, d, h = w * 0.7, d * 0.7, rng.uniform(0.45, 0.75)
    parts: list[Part] = [((0, 0, h - 0.02), (w / 2, d / 2, 0.02), "top")]
    leg = (h - 0.04) / 2
    if kind == "desk":  # side panels instead of legs
        parts += [((sx * (w / 2 - 0.015), 0, leg), (0.015, d / 2, leg), "top") for sx in (-1, 1)]
        d_back = rng.uniform(0.25, 0.4)
        parts.append(((0, -d / 2 + 0.01, h - 0.04 - d_back / 2), (w / 2 - 0.03, 0.01, d_back / 2), "top"))
    else:
        parts += [
            ((sx * (w / 2 - 0.06), sy * (d / 2 - 0.06), leg), (0.025, 0.025, leg), "legs")
            for sx in (-1, 1)
            for sy in (-1, 1)
        ]
    legs = "metal" if rng.random() < 0.4 else "wood"
    return Template(kind, parts, {"top": "wood", "legs": legs}, (w / 2, d / 2))


def chair(rng: np.random.Generator) -> Template:
    s, seat, back = rng.uniform(0.42, 0.5), rng.uniform(0.43, 0.48), rng.uniform(0.38, 0.5)
    leg = (seat - 0.05) / 2
    parts: list[Part] = [((0, 0, seat - 0.025), (s / 2, s / 2, 0.025), "seat")]
    parts += [
        ((sx * (s / 2 - 0.03), sy * (s / 2 - 0.03), leg), (0.018, 0.018, leg), "frame")
        for sx in (-1, 1)
        for sy in (-1, 1)
    ]
    parts.append(((0, -s / 2 + 0.02, seat + back / 2), (s / 2, 0.02, back / 2), "seat"))
    seat_palette = "fabric" if rng.random() < 0.5 else "wood"
    return Template("chair", parts, {"seat": seat_palette, "frame": "metal"}, (s / 2, s / 2))


def bookshelf(rng: np.random.Generator) -> tuple[Template, list[Template]]:
    """A bookshelf and one 'books' template per filled shelf (same object frame)."""
    w, d, h = rng.uniform(0.6, 1.2), rng.uniform(0.28, 0.4), rng.uniform(1.2, 2.1)
    shelves = int(rng.integers(2, 6))
    parts: list[Part] = [((sx * (w / 2 - 0.01), 0, h / 2), (0.01, d / 2, h / 2), "wood") for sx in (-1, 1)]
    parts.append(((0, -d / 2 + 0.005, h / 2), (w / 2 - 0.02, 0.005, h / 2), "wood"))
    parts.append(((0, 0, h - 0.01), (w / 2 - 0.02, d / 2, 0.01), "wood"))
    parts.append(((0, 0, 0.04), (w / 2 - 0.02, d / 2, 0.04), "wood"))
    levels = np.linspace(0.08, h - 0.02, shelves + 1)
    parts += [((0, 0, z), (w / 2 - 0.02, d / 2 - 0.01, 0.01), "wood") for z in levels[1:-1]]
    book_rows = []
    for bottom, top in zip(levels[:-1] + 0.01, levels[1:] - 0.01):
        if rng.random() < 0.35 or top - bottom < 0.18:
            continue
        x, books = -w / 2 + 0.02 + rng.uniform(0.0, 0.1), []
        while True:
            width = rng.uniform(0.02, 0.06)
            if x + width > w / 2 - 0.02 - rng.uniform(0.0, 0.15):
                break
            height = min(rng.uniform(0.15, 0.3), top - bottom - 0.01)
            depth = rng.uniform(0.15, d - 0.03)
            books.append(
                (
                    (x + width / 2, -d / 2 + 0.01 + depth / 2, bottom + height / 2),
                    (width / 2, depth / 2, height / 2),
                )
            )
            x += width + (rng.uniform(0.0, 0.05) if rng.random() < 0.2 else 0.0)
        if books:
            keys = [f"book{i % 4}" for i in range(len(books))]
            book_parts: list[Part] = [(c, hf, key) for (c, hf), key in zip(books, keys)]
            # dict.fromkeys, not a set: material creation order (and so the random stream) must not depend
            # on string hashing, which differs between processes.
            palettes = {
                key: "fabric" if key in ("book0", "book2") else "paint" for key in dict.fromkeys(keys)
            }
            book_rows.append(Template("books", book_parts, palettes, (w / 2, d / 2)))
    return Template("bookshelf", parts, {"wood": "wood"}, (w / 2, d / 2)), book_rows


def cabinet(rng: np.random.Generator, kind: str = "cabinet") -> Template:
    if kind == "counter":
        w, d, h = rng.uniform(1.2, 2.6), rng.uniform(0.58, 0.66), rng.uniform(0.88, 0.92)
    elif kind == "refrigerator":
        w, d, h = rng.uniform(0.6, 0.8), rng.uniform(0.6, 0.7), rng.uniform(1.7, 1.9)
    elif kind == "otherfurniture":
        w, d, h = rng.uniform(0.35, 0.6), rng.uniform(0.35, 0.5), rng.uniform(0.4, 0.7)
    else:
        w, d, h = rng.uniform(0.5, 1.4), rng.uniform(0.4, 0.6), rng.uniform(0.6, 1.1)
    top = 0.03 if kind == "counter" else 0.015
    parts: list[Part] = [
        ((0, -0.015, (h - top) / 2), (w / 2, d / 2 - 0.015, (h - top) / 2), "body"),
        ((0, 0, h - top / 2), (w / 2, d / 2, top / 2), "top"),
    ]
    doors = max(1, round(w / 0.5)) if kind != "otherfurniture" else 1
    for i in range(doors):
        x = -w / 2 + (i + 0.5) * w / doors + (0.15 * w / doors if i % 2 == 0 else -0.15 * w / doors)
        z = h * 0.75 if kind != "refrigerator" else h * 0.55
        parts.append(((x, d / 2 + 0.01, z), (0.01, 0.01, 0.05 if kind != "refrigerator" else 0.2), "handle"))
    palettes = {"body": "paint", "top": "stone" if kind == "counter" else "paint", "handle": "metal"}
    return Template(kind, parts, palettes, (w / 2, d / 2 + 0.02))


def bed(rng: np.random.Generator) -> Template:
    w, l, head = rng.uniform(0.9, 1.8), rng.uniform(1.9, 2.1), rng.uniform(0.8, 1.1)
    parts: list[Part] = [
        ((0, -l / 2 + 0.03, head / 2), (w / 2, 0.03, head / 2), "frame"),
        ((0, 0.03, 0.15), (w / 2, l / 2 - 0.03, 0.15), "frame"),
        ((0, 0.03, 0.4), (w / 2 - 0.03, l / 2 - 0.06, 0.1), "sheet"),
        ((0, -l / 2 + 0.3, 0.56), (w / 2 - 0.12, 0.17, 0.06), "sheet"),
        ((0, l / 2 - 0.6 * l / 2, 0.42), (w / 2 - 0.01, 0.6 * l / 2 - 0.01, 0.1), "blanket"),
    ]
    return Template("bed", parts, {"frame": "wood", "sheet": "paint", "blanket": "fabric"}, (w / 2, l / 2))


def sofa(rng: np.random.Generator) -> Template:
    w, d = rng.uniform(1.5, 2.4), rng.uniform(0.8, 0.95)
    parts: list[Part] = [
        ((0, -d / 2 + 0.1, 0.42), (w / 2, 0.1, 0.42), "fabric"),
        ((0, 0.1, 0.2), (w / 2 - 0.18, d / 2 - 0.1, 0.2), "fabric"),
        ((0, 0.1, 0.45), (w / 2 - 0.19, d / 2 - 0.12, 0.05), "cushion"),
    ]
    parts += [((sx * (w / 2 - 0.09), 0.1, 0.3), (0.09, d / 2 - 0.1, 0.3), "fabric") for sx in (-1, 1)]
    return Template("sofa", parts, {"fabric": "fabric", "cushion": "fabric"}, (w / 2, d / 2))


def door(rng: np.random.Generator) -> Template:
    w, h, t = rng.uniform(0.8, 0.95), rng.uniform(2.0, 2.1), 0.04
    parts: list[Part] = [
        ((0, t / 2, h / 2), (w / 2, t / 2, h / 2), "panel"),
        ((w / 2 - 0.1, t + 0.03, 1.0), (0.06, 0.015, 0.012), "handle"),
    ]
    return Template(
        "door", parts, {"panel": "wood" if rng.random() < 0.6 else "paint", "handle": "metal"}, (w / 2, t)
    )


def window(rng: np.random.Generator, sill: float) -> Template:
    w, h = rng.uniform(0.7, 1.6), rng.uniform(0.9, 1.3)
    zc = sill + h / 2
    parts: list[Part] = [
        ((0, 0.015, zc), (w / 2, 0.015, h / 2), "glass"),
        ((0, 0.035, zc), (0.02, 0.005, h / 2), "frame"),
        ((0, 0.035, zc), (w / 2, 0.005, 0.02), "frame"),
        ((0, 0.06, sill - 0.02), (w / 2 + 0.05, 0.06, 0.02), "frame"),
    ]
    return Template("window", parts, {"glass": "glass", "frame": "paint"}, (w / 2 + 0.05, 0.12))


def picture(rng: np.random.Generator, center_height: float) -> Template:
    w, h, t = rng.uniform(0.3, 1.0), rng.uniform(0.3, 0.7), rng.uniform(0.02, 0.03)
    parts: list[Part] = [
        ((0, t / 2, center_height), (w / 2, t / 2, h / 2), "frame"),
        ((0, t + 0.002, center_height), (w / 2 - 0.03, 0.002, h / 2 - 0.03), "art"),
    ]
    return Template("picture", parts, {"frame": "wood", "art": "art"}, (w / 2, t))
