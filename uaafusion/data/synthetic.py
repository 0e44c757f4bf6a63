"""A small procedural infrared/visible road-scene dataset with per-pixel labels (msrs layout).

Each scene is a road seen from a car: sky, buildings, sidewalks and grass (class ``background``),
the ``road`` with lane marks, and ``person``, ``car`` and ``bicycle`` objects in perspective.

- Infrared (8-bit gray) shows temperature, whatever the light: people are the warmest things, car
  engines, tyres and exhausts are warm, glass and the sky are cold; thermal images are blurry
  and show little texture.
- Visible (RGB) shows colour and texture by day. At night (every second scene) it is dark and
  noisy, lit only by the ego car's low beams near the bottom, lit windows, and the glare of
  oncoming headlights: far objects disappear, so neither modality alone suffices.

Everything is drawn with vectorised numpy on coordinate grids and seeded per image
(``seed``, split, index), so the same config writes byte-identical files.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uaafusion.config import SyntheticConfig
from uaafusion.data.io import write_png
from uaafusion.integrity import write_text_atomically

LOGGER = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = ("background", "road", "person", "car", "bicycle")
BACKGROUND, ROAD, PERSON, CAR, BICYCLE = range(5)
# Cityscapes-like colours for label previews, indexed by class id.
PALETTE = np.array([[0, 0, 0], [128, 64, 128], [220, 20, 60], [0, 0, 142], [119, 11, 32]], dtype=np.uint8)
SPLITS: tuple[str, ...] = ("train", "test")
LAYOUT_FOLDERS: tuple[str, ...] = ("ir", "vi", "Label")
MONTAGE_SAMPLES = 6

# Probabilities that a scene holds at least one object of a kind.
PERSON_PROBABILITY = 0.75
CAR_PROBABILITY = 0.75
BICYCLE_PROBABILITY = 0.55

Color = tuple[float, float, float]


@dataclass(frozen=True)
class SyntheticScene:
    """One rendered scene: ``ir uint8 (H, W)``, ``vi uint8 (H, W, 3)``, ``label uint8 (H, W)``."""

    name: str
    night: bool
    ir: np.ndarray
    vi: np.ndarray
    label: np.ndarray


class _Canvas:
    """Layers being painted: infrared temperature ``(H, W)``, visible albedo ``(H, W, 3)`` (0-255
    floats before lighting), visible emitted light ``(H, W, 3)`` (lamps, unaffected by darkness), labels."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
        self.y = rows + 0.5
        self.x = cols + 0.5
        self.ir = np.zeros((height, width))
        self.albedo = np.zeros((height, width, 3))
        self.emission = np.zeros((height, width, 3))
        self.label = np.zeros((height, width), dtype=np.uint8)

    def paint(self, mask: np.ndarray, ir: float | np.ndarray | None = None, color: Color | np.ndarray | None = None,
              label: int | None = None) -> None:
        """Set the layers under boolean ``mask (H, W)``; ``None`` leaves a layer as it is."""
        if ir is not None:
            self.ir[mask] = ir[mask] if isinstance(ir, np.ndarray) else ir
        if color is not None:
            self.albedo[mask] = color[mask] if isinstance(color, np.ndarray) and color.ndim == 3 else color
        if label is not None:
            self.label[mask] = label

    # ---- shapes: boolean masks (H, W) -----------------------------------------------------------

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        return (self.x >= x0) & (self.x < x1) & (self.y >= y0) & (self.y < y1)

    def ellipse(self, center_x: float, center_y: float, radius_x: float, radius_y: float) -> np.ndarray:
        radius_x, radius_y = max(radius_x, 0.6), max(radius_y, 0.6)
        return ((self.x - center_x) / radius_x) ** 2 + ((self.y - center_y) / radius_y) ** 2 <= 1.0

    def segment(self, x0: float, y0: float, x1: float, y1: float, thickness: float) -> np.ndarray:
        """Pixels within ``thickness / 2`` of the segment (at least a 1-pixel line)."""
        dx, dy = x1 - x0, y1 - y0
        length2 = max(dx * dx + dy * dy, 1e-9)
        along = np.clip(((self.x - x0) * dx + (self.y - y0) * dy) / length2, 0.0, 1.0)
        distance = np.hypot(self.x - (x0 + along * dx), self.y - (y0 + along * dy))
        return distance <= max(thickness / 2, 0.71)

    def trapezoid(self, y_top: float, y_bottom: float, top: tuple[float, float],
                  bottom: tuple[float, float]) -> np.ndarray:
        """Rows ``[y_top, y_bottom)``; x-extent interpolated from ``top=(x0, x1)`` to ``bottom``."""
        fraction = np.clip((self.y - y_top) / max(y_bottom - y_top, 1e-9), 0.0, 1.0)
        left = top[0] + fraction * (bottom[0] - top[0])
        right = top[1] + fraction * (bottom[1] - top[1])
        return (self.y >= y_top) & (self.y < y_bottom) & (self.x >= left) & (self.x < right)

    def glow(self, center_x: float, center_y: float, sigma_x: float, sigma_y: float) -> np.ndarray:
        """Gaussian ``(H, W)`` peaking at 1."""
        return np.exp(-0.5 * (((self.x - center_x) / sigma_x) ** 2 + ((self.y - center_y) / sigma_y) ** 2))


@dataclass(frozen=True)
class _Road:
    """Perspective of the scene: horizon row, road centre line and half width per row."""

    horizon: float
    height: int
    vanish_x: float
    bottom_x: float
    bottom_half_width: float

    def depth_fraction(self, y: float | np.ndarray) -> float | np.ndarray:
        """0 at the horizon, 1 at the bottom row: also the scale of things standing at row ``y``."""
        return np.clip((y - self.horizon) / (self.height - self.horizon), 0.0, 1.0)

    def center(self, y: float | np.ndarray) -> float | np.ndarray:
        return self.vanish_x + self.depth_fraction(y) * (self.bottom_x - self.vanish_x)

    def half_width(self, y: float | np.ndarray) -> float | np.ndarray:
        return self.depth_fraction(y) * self.bottom_half_width

    def pixels_per_metre(self, y: float) -> float:
        """Road half width at the bottom is 3 m."""
        return float(self.depth_fraction(y)) * self.bottom_half_width / 3.0


def _value_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Smooth noise in about ``[-1, 1]`` ``(H, W)``: random values on a grid of ``cell`` pixels, bilinear."""
    grid_h, grid_w = int(math.ceil(height / cell)) + 2, int(math.ceil(width / cell)) + 2
    values = rng.uniform(-1.0, 1.0, size=(grid_h, grid_w))
    rows = (np.arange(height) + 0.5) / cell
    cols = (np.arange(width) + 0.5) / cell
    row0, col0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    row_weight, col_weight = (rows - row0)[:, None], (cols - col0)[None, :]
    top = values[row0][:, col0] * (1 - col_weight) + values[row0][:, col0 + 1] * col_weight
    bottom = values[row0 + 1][:, col0] * (1 - col_weight) + values[row0 + 1][:, col0 + 1] * col_weight
    return top * (1 - row_weight) + bottom * row_weight


def _box_blur(image: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a ``(2r+1)^2`` window, edges replicated: ``(H, W) -> (H, W)``."""
    if radius <= 0:
        return image
    padded = np.pad(image, radius, mode="edge")
    size = 2 * radius + 1
    integral = np.pad(padded.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    height, width = image.shape
    total = (integral[size:size + height, size:size + width] - integral[:height, size:size + width]
             - integral[size:size + height, :width] + integral[:height, :width])
    return total / (size * size)


def _jitter(rng: np.random.Generator, color: Color, amount: float = 12.0) -> Color:
    return tuple(float(np.clip(value + rng.uniform(-amount, amount), 0, 255)) for value in color)  # type: ignore[return-value]


# ---- scene parts ---------------------------------------------------------------------------------


def _draw_background(canvas: _Canvas, road: _Road, rng: np.random.Generator, night: bool) -> None:
    height, width = canvas.height, canvas.width
    y, x = canvas.y, canvas.x
    horizon = road.horizon
    above = y < horizon
    # Sky: cold in infrared; blue gradient by day, near black at night.
    sky_fraction = np.clip(y / horizon, 0, 1)[..., None]
    top, bottom = (np.array([95, 145, 215]), np.array([190, 212, 235])) if not night else (
        np.array([3, 4, 12]), np.array([14, 15, 26]))
    sky_color = top + (bottom - top) * sky_fraction
    canvas.paint(above, ir=22 + 20 * sky_fraction[..., 0], color=sky_color, label=BACKGROUND)
    if night:
        canvas.emission += sky_color * above[..., None]  # the night sky's own faint light

    # Buildings and trees on the horizon: piecewise-constant skyline over columns.
    column_edges = np.cumsum(rng.integers(max(3, width // 14), max(5, width // 5), size=width))
    block = np.searchsorted(column_edges, np.arange(width), side="right")
    block_count = int(block.max()) + 1
    block_height = rng.uniform(0.15, 0.75, size=block_count) * horizon
    block_is_tree = rng.random(block_count) < 0.3
    block_gray = rng.uniform(90, 190, size=block_count)
    block_tint = rng.uniform(-25, 25, size=(block_count, 3))
    skyline = (horizon - block_height[block])[None, :]
    structure = above & (y >= skyline)
    tree = structure & block_is_tree[block][None, :]
    building = structure & ~tree
    texture = _value_noise(rng, height, width, max(2.0, width / 40))
    building_color = (block_gray[block][None, :, None] + block_tint[block][None, :, :]
                      + 18 * texture[..., None]) * np.ones((height, 1, 1))
    canvas.paint(building, ir=np.full((height, width), 70.0 if night else 105.0) + 6 * texture,
                 color=building_color)
    tree_color = np.stack([40 + 20 * texture, 85 + 30 * texture, 35 + 15 * texture], axis=-1)
    canvas.paint(tree, ir=np.full((height, width), 55.0 if night else 85.0) + 8 * texture, color=tree_color)
    # Windows: a grid on buildings; some lit at night (light in visible, slightly warm in infrared).
    window_cell = max(3.0, width / 32)
    window = building & ((x % window_cell) < window_cell * 0.5) & (((y - skyline) % window_cell) > window_cell * 0.45)
    cell_random = np.sin((np.floor(x / window_cell) * 12.9898 + np.floor(y / window_cell) * 78.233)
                         + rng.uniform(0, 1000)) * 43758.5453
    lit = window & ((cell_random - np.floor(cell_random)) < (0.35 if night else 0.0))
    canvas.paint(window, color=(55, 65, 80))
    canvas.paint(lit, ir=np.full((height, width), 92.0), color=(255, 214, 140))
    if night:
        canvas.emission[lit] += np.array([200.0, 165.0, 100.0])

    # Ground: grass far out, sidewalks beside the road, the road with lane marks.
    below = ~above
    ground_noise = _value_noise(rng, height, width, max(2.0, width / 48))
    grass_color = np.stack([60 + 25 * ground_noise, 105 + 30 * ground_noise, 45 + 15 * ground_noise], axis=-1)
    canvas.paint(below, ir=np.full((height, width), 68.0 if night else 110.0) + 6 * ground_noise,
                 color=grass_color, label=BACKGROUND)
    center, half_width = road.center(y), road.half_width(y)
    offset = np.abs(x - center)
    sidewalk = below & (offset < half_width * 1.35)
    canvas.paint(sidewalk, ir=np.full((height, width), 88.0 if night else 128.0) + 4 * ground_noise,
                 color=np.stack([150 + 15 * ground_noise] * 3, axis=-1) * np.array([1.0, 0.98, 0.93]))
    on_road = below & (offset < half_width)
    asphalt = 88 + 14 * ground_noise + 8 * _value_noise(rng, height, width, 1.5)
    canvas.paint(on_road, ir=np.full((height, width), 100.0 if night else 150.0) + 5 * ground_noise,
                 color=np.stack([asphalt, asphalt, asphalt * 1.05], axis=-1), label=ROAD)
    depth = road.depth_fraction(y)
    inverse_depth = 1.0 / np.maximum(depth, 1e-3)
    dashes = (np.floor(inverse_depth * 1.6 + rng.uniform(0, 1)) % 2) == 0
    centre_mark = on_road & (offset < np.maximum(half_width * 0.035, 0.45)) & dashes & (depth > 0.04)
    edge_mark = on_road & (offset > half_width * 0.93) & (depth > 0.04)
    marks = centre_mark | edge_mark
    canvas.paint(marks, ir=canvas.ir - 10, color=(230, 230, 220))


def _draw_person(canvas: _Canvas, rng: np.random.Generator, foot_x: float, foot_y: float, size: float,
                 night: bool) -> None:
    """A standing/walking person ``size`` pixels tall with feet at ``(foot_x, foot_y)``."""
    h = size
    shirt = _jitter(rng, tuple(rng.choice([[200, 40, 40], [40, 90, 180], [230, 200, 60], [60, 140, 70],
                                           [235, 235, 235], [40, 40, 45]])), 20)
    trousers = _jitter(rng, tuple(rng.choice([[35, 40, 70], [60, 55, 50], [25, 25, 28], [120, 100, 80]])), 10)
    skin = _jitter(rng, (215, 170, 140), 25)
    stride = rng.uniform(-0.12, 0.12) * h
    hip_y = foot_y - 0.47 * h
    leg_thickness, arm_thickness = max(1.0, 0.1 * h), max(1.0, 0.07 * h)
    legs = (canvas.segment(foot_x - 0.04 * h, hip_y, foot_x - 0.05 * h - stride / 2, foot_y - 0.02 * h, leg_thickness)
            | canvas.segment(foot_x + 0.04 * h, hip_y, foot_x + 0.05 * h + stride / 2, foot_y - 0.02 * h, leg_thickness))
    torso = canvas.ellipse(foot_x, foot_y - 0.64 * h, 0.13 * h, 0.2 * h)
    arms = (canvas.segment(foot_x - 0.13 * h, foot_y - 0.78 * h, foot_x - 0.17 * h + stride / 3, foot_y - 0.45 * h,
                           arm_thickness)
            | canvas.segment(foot_x + 0.13 * h, foot_y - 0.78 * h, foot_x + 0.17 * h - stride / 3, foot_y - 0.45 * h,
                             arm_thickness))
    head = canvas.ellipse(foot_x, foot_y - 0.9 * h, 0.065 * h, 0.08 * h)
    warm = rng.uniform(-8, 8)
    canvas.paint(legs, ir=205 + warm, color=trousers, label=PERSON)
    canvas.paint(arms, ir=222 + warm, color=shirt, label=PERSON)
    canvas.paint(torso, ir=212 + warm, color=shirt, label=PERSON)
    canvas.paint(head, ir=245 + warm / 2, color=skin, label=PERSON)


def _draw_car(canvas: _Canvas, rng: np.random.Generator, center_x: float, ground_y: float, metre: float,
              oncoming: bool, night: bool) -> None:
    """A car seen from the front (``oncoming``) or the rear, ``metre`` pixels per metre."""
    width, height = 1.8 * metre, 1.45 * metre
    left, right = center_x - width / 2, center_x + width / 2
    paint_color = _jitter(rng, tuple(rng.choice([[180, 30, 30], [235, 235, 235], [160, 165, 170], [30, 60, 140],
                                                 [30, 30, 35], [200, 160, 40]])), 15)
    shadow = canvas.ellipse(center_x, ground_y - 0.02 * height, 0.6 * width, 0.08 * height + 0.5)
    canvas.paint(shadow & (canvas.label != CAR), color=canvas.albedo * 0.45)
    wheel_top = ground_y - 0.3 * height
    wheels = (canvas.rect(left + 0.04 * width, wheel_top, left + 0.22 * width, ground_y)
              | canvas.rect(right - 0.22 * width, wheel_top, right - 0.04 * width, ground_y))
    body = canvas.rect(left, ground_y - 0.62 * height, right, ground_y - 0.14 * height)
    cabin = canvas.trapezoid(ground_y - height, ground_y - 0.6 * height,
                             (left + 0.17 * width, right - 0.17 * width), (left + 0.05 * width, right - 0.05 * width))
    window = canvas.trapezoid(ground_y - 0.94 * height, ground_y - 0.64 * height,
                              (left + 0.22 * width, right - 0.22 * width), (left + 0.11 * width, right - 0.11 * width))
    sun = 0.0 if night else 20.0
    canvas.paint(wheels, ir=172, color=(20, 20, 22), label=CAR)
    canvas.paint(body, ir=118 + sun, color=paint_color, label=CAR)
    canvas.paint(cabin, ir=112 + sun, color=paint_color, label=CAR)
    canvas.paint(window, ir=62, color=(45, 60, 75) if not night else (30, 35, 45))
    light_y0, light_y1 = ground_y - 0.52 * height, ground_y - 0.4 * height
    light_left = canvas.rect(left + 0.04 * width, light_y0, left + 0.2 * width, light_y1)
    light_right = canvas.rect(right - 0.2 * width, light_y0, right - 0.04 * width, light_y1)
    lights = light_left | light_right
    if oncoming:
        engine = canvas.rect(left + 0.15 * width, ground_y - 0.55 * height, right - 0.15 * width, ground_y - 0.18 * height)
        canvas.paint(engine, ir=205)  # warm engine behind the grille
        canvas.paint(lights, ir=150, color=(250, 250, 235))
        if night:  # headlights: strong glare in visible, barely anything in infrared
            for light_x in (left + 0.12 * width, right - 0.12 * width):
                glare = canvas.glow(light_x, (light_y0 + light_y1) / 2, 0.45 * width, 0.3 * width)
                streak = canvas.glow(light_x, (light_y0 + light_y1) / 2, 1.6 * width, 0.06 * width + 0.5)
                canvas.emission += (320 * glare + 120 * streak)[..., None] * np.array([1.0, 0.97, 0.85])
    else:
        exhaust = canvas.ellipse(right - 0.3 * width, ground_y - 0.16 * height, 0.06 * width, 0.05 * height)
        canvas.paint(exhaust, ir=238, label=CAR)
        canvas.paint(lights, ir=140, color=(200, 20, 20))
        if night:
            for light_x in (left + 0.12 * width, right - 0.12 * width):
                glow = canvas.glow(light_x, (light_y0 + light_y1) / 2, 0.15 * width, 0.1 * width)
                canvas.emission += (260 * glow)[..., None] * np.array([1.0, 0.12, 0.1])


def _draw_bicycle(canvas: _Canvas, rng: np.random.Generator, center_x: float, ground_y: float, metre: float,
                  rider: bool, night: bool) -> None:
    """A bicycle seen from the side, optionally ridden by a person."""
    radius = 0.34 * metre
    facing = 1.0 if rng.random() < 0.5 else -1.0
    hub_y = ground_y - radius
    rear_x, front_x = center_x - facing * 0.52 * metre, center_x + facing * 0.52 * metre
    crank_x, seat_x, head_x = center_x - facing * 0.05 * metre, center_x - facing * 0.2 * metre, center_x + facing * 0.38 * metre
    top_y = hub_y - 0.55 * metre
    frame_color = _jitter(rng, tuple(rng.choice([[30, 120, 200], [210, 50, 40], [40, 40, 40], [230, 230, 230],
                                                 [60, 160, 80]])), 15)
    tube = max(1.0, 0.05 * metre)
    discs = canvas.ellipse(rear_x, hub_y, radius, radius) | canvas.ellipse(front_x, hub_y, radius, radius)
    inner = (canvas.ellipse(rear_x, hub_y, radius * 0.78, radius * 0.78)
             | canvas.ellipse(front_x, hub_y, radius * 0.78, radius * 0.78))
    tyres = discs & ~inner
    frame = (canvas.segment(rear_x, hub_y, seat_x, top_y, tube) | canvas.segment(seat_x, top_y, crank_x, hub_y, tube)
             | canvas.segment(crank_x, hub_y, rear_x, hub_y, tube) | canvas.segment(seat_x, top_y, head_x, top_y, tube)
             | canvas.segment(head_x, top_y, front_x, hub_y, tube) | canvas.segment(crank_x, hub_y, head_x, top_y, tube)
             | canvas.segment(head_x, top_y, head_x + facing * 0.05 * metre, top_y - 0.2 * metre, tube))
    # Spokes area: labelled bicycle, mostly see-through (mix with what is behind).
    canvas.paint(inner, ir=canvas.ir * 0.8 + 0.2 * 120, color=canvas.albedo * 0.7 + 0.3 * np.array([170, 170, 170]),
                 label=BICYCLE)
    canvas.paint(tyres, ir=150, color=(22, 22, 22), label=BICYCLE)
    canvas.paint(frame, ir=58, color=frame_color, label=BICYCLE)
    if rider:
        person_height = 1.55 * metre
        _draw_person(canvas, rng, seat_x + facing * 0.1 * metre, top_y + 0.45 * person_height, person_height, night)


def render_scene(rng: np.random.Generator, height: int, width: int, night: bool, name: str = "") -> SyntheticScene:
    """Draw one scene; ``rng`` decides everything, so the same generator state gives the same scene."""
    canvas = _Canvas(height, width)
    horizon = height * rng.uniform(0.32, 0.45)
    road = _Road(horizon, height, vanish_x=width * rng.uniform(0.35, 0.65), bottom_x=width * rng.uniform(0.4, 0.6),
                 bottom_half_width=width * rng.uniform(0.4, 0.55))
    _draw_background(canvas, road, rng, night)

    objects: list[tuple[float, Callable[[], None]]] = []

    def ground_row(low: float, high: float) -> float:
        return horizon + rng.uniform(low, high) * (height - horizon)

    def place(foot_y: float, lane_low: float, lane_high: float) -> float:
        lane = rng.uniform(lane_low, lane_high) * (1 if rng.random() < 0.5 else -1)
        x = float(road.center(foot_y) + lane * road.half_width(foot_y))
        return float(np.clip(x, 0.06 * width, 0.94 * width))

    if rng.random() < PERSON_PROBABILITY:
        for _ in range(1 + min(int(rng.poisson(0.9)), 3)):
            foot_y = ground_row(0.3, 0.97)
            foot_x = place(foot_y, 0.2, 1.3)
            size = 1.75 * road.pixels_per_metre(foot_y) * rng.uniform(0.9, 1.1)
            objects.append((foot_y, lambda x=foot_x, y=foot_y, s=size: _draw_person(canvas, rng, x, y, s, night)))
    if rng.random() < CAR_PROBABILITY:
        for _ in range(1 + min(int(rng.poisson(0.6)), 2)):
            ground_y = ground_row(0.25, 0.95)
            lane = rng.uniform(0.05, 0.6) * (1 if rng.random() < 0.5 else -1)
            center_x = float(np.clip(road.center(ground_y) + lane * road.half_width(ground_y), 0.05 * width, 0.95 * width))
            metre = road.pixels_per_metre(ground_y)
            objects.append((ground_y, lambda x=center_x, y=ground_y, m=metre, oncoming=lane < 0:
                            _draw_car(canvas, rng, x, y, m, oncoming, night)))
    if rng.random() < BICYCLE_PROBABILITY:
        for _ in range(1 + int(rng.random() < 0.25)):
            ground_y = ground_row(0.35, 0.95)
            center_x = place(ground_y, 0.55, 1.1)
            metre = road.pixels_per_metre(ground_y) * 1.1
            rider = bool(rng.random() < 0.5)
            objects.append((ground_y, lambda x=center_x, y=ground_y, m=metre, r=rider:
                            _draw_bicycle(canvas, rng, x, y, m, r, night)))
    for _, draw in sorted(objects, key=lambda item: item[0]):  # far to near: nearer things cover farther ones
        draw()
    return SyntheticScene(name, night, _finish_infrared(canvas, rng, night), _finish_visible(canvas, road, rng, night),
                          canvas.label.copy())


def _finish_infrared(canvas: _Canvas, rng: np.random.Generator, night: bool) -> np.ndarray:
    """Thermal look: blur (low resolution optics), gentle vignetting, sensor noise -> ``uint8 (H, W)``."""
    temperature = _box_blur(canvas.ir, 1)
    vignette = 1.0 - 0.08 * (((canvas.x / canvas.width) - 0.5) ** 2 + ((canvas.y / canvas.height) - 0.5) ** 2) * 4
    noise = rng.normal(0.0, 2.5, size=temperature.shape) + 3.0 * _value_noise(rng, canvas.height, canvas.width, 8.0)
    return np.clip(np.round(temperature * vignette + noise + (0 if night else 6)), 0, 255).astype(np.uint8)


def _finish_visible(canvas: _Canvas, road: _Road, rng: np.random.Generator, night: bool) -> np.ndarray:
    """Lighting and sensor: daylight, or darkness with low beams and glare -> ``uint8 (H, W, 3)``."""
    if night:
        depth = np.asarray(road.depth_fraction(canvas.y))
        low_beam = (np.clip((depth - 0.45) / 0.4, 0.0, 1.0) ** 1.5
                    * np.exp(-0.5 * ((canvas.x - canvas.width / 2) / (0.35 * canvas.width)) ** 2))
        light = rng.uniform(0.05, 0.1) + 0.75 * low_beam
        radiance = canvas.albedo * light[..., None] + canvas.emission
        noise = rng.normal(0.0, 6.0, size=radiance.shape[:2])[..., None] + rng.normal(0.0, 3.0, size=radiance.shape)
    else:
        light = rng.uniform(0.85, 1.1)
        radiance = canvas.albedo * light + canvas.emission
        noise = rng.normal(0.0, 2.0, size=radiance.shape)
    return np.clip(np.round(radiance + noise), 0, 255).astype(np.uint8)


def scene_name(index: int, night: bool) -> str:
    """``day_0000`` / ``night_0001``: the index runs over the split."""
    return f"{'night' if night else 'day'}_{index:04d}"


def generate_scene(config: SyntheticConfig, split: str, index: int) -> SyntheticScene:
    """Scene ``index`` of ``split``; every second scene (odd index) is at night."""
    night = index % 2 == 1
    rng = np.random.default_rng([abs(config.seed), SPLITS.index(split) if split in SPLITS else len(split), index])
    return render_scene(rng, config.height, config.width, night, scene_name(index, night))


def colorize_label(label: np.ndarray) -> np.ndarray:
    """Class ids ``(H, W)`` -> RGB preview ``uint8 (H, W, 3)`` (ids beyond the palette are white)."""
    colored = np.full((*label.shape, 3), 255, dtype=np.uint8)
    known = label < len(PALETTE)
    colored[known] = PALETTE[label[known]]
    return colored


def montage(scenes: list[SyntheticScene], gap: int = 2) -> np.ndarray:
    """Rows of IR | visible | colourised label, white gaps -> ``uint8 (rows*(H+gap)+gap, 3*(W+gap)+gap, 3)``."""
    height, width = scenes[0].label.shape
    rows, columns = len(scenes), 3
    sheet = np.full((rows * (height + gap) + gap, columns * (width + gap) + gap, 3), 255, dtype=np.uint8)
    for row, scene in enumerate(scenes):
        tiles = (np.repeat(scene.ir[..., None], 3, axis=2), scene.vi, colorize_label(scene.label))
        for column, tile in enumerate(tiles):
            top, left = gap + row * (height + gap), gap + column * (width + gap)
            sheet[top:top + height, left:left + width] = tile
    return sheet


def write_synthetic_dataset(config: SyntheticConfig, root: str | Path) -> dict[str, Any]:
    """Write ``root/{train,test}/{ir,vi,Label}/NAME.png``, ``root/montage.png`` and ``root/manifest.json``.

    Old PNGs in those folders are removed first, so the folder holds exactly this set.
    Returns the manifest: counts, size, seed, class names and class pixel/image fractions per split.
    """
    root = Path(root)
    counts = {"train": config.train, "test": config.test}
    manifest: dict[str, Any] = {
        "layout": "msrs",
        "seed": config.seed,
        "height": config.height,
        "width": config.width,
        "class_names": list(CLASS_NAMES),
        "splits": {},
    }
    montage_scenes: list[SyntheticScene] = []
    for split in SPLITS:
        for folder in LAYOUT_FOLDERS:
            directory = root / split / folder
            if directory.is_dir():
                for stale in directory.glob("*.png"):
                    stale.unlink()
        pixel_counts = np.zeros(len(CLASS_NAMES), dtype=np.int64)
        image_counts = np.zeros(len(CLASS_NAMES), dtype=np.int64)
        nights = 0
        for index in range(counts[split]):
            scene = generate_scene(config, split, index)
            write_png(root / split / "ir" / f"{scene.name}.png", scene.ir)
            write_png(root / split / "vi" / f"{scene.name}.png", scene.vi)
            write_png(root / split / "Label" / f"{scene.name}.png", scene.label)
            per_class = np.bincount(scene.label.ravel(), minlength=len(CLASS_NAMES))
            pixel_counts += per_class
            image_counts += per_class > 0
            nights += scene.night
            if split == "train" and len(montage_scenes) < MONTAGE_SAMPLES:
                montage_scenes.append(scene)
        total_pixels = max(int(pixel_counts.sum()), 1)
        manifest["splits"][split] = {
            "count": counts[split],
            "day": counts[split] - nights,
            "night": nights,
            "class_pixel_fractions": {name: round(float(pixel_counts[i]) / total_pixels, 6)
                                      for i, name in enumerate(CLASS_NAMES)},
            "class_image_fractions": {name: round(float(image_counts[i]) / counts[split], 6)
                                      for i, name in enumerate(CLASS_NAMES)},
        }
    write_png(root / "montage.png", montage(montage_scenes))
    write_text_atomically(root / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    LOGGER.info("wrote %d train and %d test synthetic pairs to %s", config.train, config.test, root)
    return manifest
