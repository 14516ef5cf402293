"""Procedurally drawn talking characters (ours).

Each identity is a handful of random parameters (face shape, skin, hair, eyes, accessories,
background, drawing style). Frames are drawn at twice the crop size and area-downsampled, so edges
are anti-aliased. Every frame also gets a synthetic 478-point face-mesh landmark set (mediapipe's
index convention for lips, jaw/face oval, nose, eyes and irises) so the team's mask code runs on the
toy world exactly as on real video.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..face.track import EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT, NUM_LANDMARKS

# Mouth interior: one dark colour for every character, so the pixel ruler can find it.
MOUTH_INTERIOR = (46, 10, 18)
_SKIN = ((255, 224, 196), (241, 194, 160), (224, 172, 132), (198, 142, 104), (170, 118, 86), (236, 200, 178),
         (250, 214, 170), (180, 220, 140), (160, 200, 240), (240, 180, 200))
_HAIR = ((20, 16, 14), (70, 45, 30), (150, 100, 50), (220, 190, 120), (180, 60, 30), (120, 120, 130),
         (30, 60, 160), (200, 60, 150), (240, 240, 235))
_EYES = ((60, 90, 160), (70, 120, 60), (90, 60, 30), (40, 40, 40), (120, 140, 150))
_LIPS = ((190, 90, 100), (170, 70, 80), (200, 120, 120), (150, 60, 70), (210, 100, 130))

# mediapipe face-mesh indices, in contour order (image left to right for the jaw/oval).
OUTER_LIP_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
OUTER_LIP_LOWER = (291, 375, 321, 405, 314, 17, 84, 181, 91, 146, 61)
INNER_LIP_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
INNER_LIP_LOWER = (308, 324, 318, 402, 317, 14, 87, 178, 88, 95, 78)
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
NOSE_LINE = ((168, -0.12), (6, -0.06), (197, 0.0), (195, 0.05), (5, 0.12), (4, 0.18), (1, 0.22))  # (index, height)


@dataclass
class Character:
    """Random identity parameters; coordinates are in the 2x drawing canvas (size 2 * crop)."""

    style: str  # "photo" or "cartoon"
    centre: tuple[float, float]
    face_axes: tuple[float, float]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_style: int
    eye_colour: tuple[int, int, int]
    eye_spacing: float
    eye_size: float
    lip: tuple[int, int, int]
    mouth_width: float
    mouth_drop: float
    glasses: bool
    hat: tuple[int, int, int] | None
    earrings: bool
    blush: bool
    shirt: tuple[int, int, int]
    background: int
    background_colours: tuple[tuple[int, int, int], tuple[int, int, int]]
    texture_seed: int

    @classmethod
    def random(cls, rng: np.random.Generator, canvas: int) -> Character:
        def pick(options):
            return tuple(int(v) for v in options[rng.integers(len(options))])

        def jitter(colour, amount=18):
            return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)

        unit = canvas / 128.0
        face_a = rng.uniform(29, 37) * unit
        return cls(
            style="photo" if rng.random() < 0.5 else "cartoon",
            centre=(canvas / 2 + rng.uniform(-2, 2) * unit, canvas / 2 + rng.uniform(-1, 3) * unit),
            face_axes=(face_a, face_a * rng.uniform(1.12, 1.32)),
            skin=jitter(pick(_SKIN)),
            hair=jitter(pick(_HAIR), 12),
            hair_style=int(rng.integers(4)),
            eye_colour=pick(_EYES),
            eye_spacing=rng.uniform(0.36, 0.46),
            eye_size=rng.uniform(0.8, 1.3),
            lip=jitter(pick(_LIPS), 12),
            mouth_width=rng.uniform(0.36, 0.5),
            mouth_drop=rng.uniform(0.5, 0.58),
            glasses=bool(rng.random() < 0.3),
            hat=jitter(pick(_HAIR + _EYES), 20) if rng.random() < 0.2 else None,
            earrings=bool(rng.random() < 0.25),
            blush=bool(rng.random() < 0.3),
            shirt=jitter(pick(_EYES + _LIPS + _HAIR), 30),
            background=int(rng.integers(4)),
            background_colours=(jitter(pick(_SKIN + _EYES + _HAIR), 40), jitter(pick(_EYES + _LIPS), 40)),
            texture_seed=int(rng.integers(2**31)),
        )

    # Geometry in canvas coordinates.
    @property
    def mouth_centre(self) -> tuple[float, float]:
        cx, cy = self.centre
        return cx, cy + self.mouth_drop * self.face_axes[1]

    def eye_centres(self) -> tuple[tuple[float, float], tuple[float, float]]:
        cx, cy = self.centre
        dx, y = self.eye_spacing * self.face_axes[0], cy - 0.12 * self.face_axes[1]
        return (cx - dx, y), (cx + dx, y)

    def mouth_shape(self, opening: float, width: float) -> tuple[float, float]:
        """Half-width and interior half-height of the mouth for a target opening/width in 0..1."""
        half_width = self.mouth_width * self.face_axes[0] * (0.82 + 0.36 * width)
        half_height = opening * 0.2 * self.face_axes[0]
        return half_width, half_height


def _ellipse(image, centre, axes, colour, thickness=-1, angle=0.0, start=0, end=360):
    scale = 16  # cv2 draws with 4 fractional bits
    cv2.ellipse(image, (int(round(centre[0] * scale)), int(round(centre[1] * scale))),
                (max(int(round(axes[0] * scale)), 1), max(int(round(axes[1] * scale)), 1)), angle, start, end,
                colour, thickness, cv2.LINE_AA, 4)


def draw_background(character: Character, canvas: int, rng: np.random.Generator) -> np.ndarray:
    first, second = (np.array(c, np.float32) for c in character.background_colours)
    ys, xs = np.mgrid[0:canvas, 0:canvas].astype(np.float32) / canvas
    kind = character.background
    if kind == 0:
        mix = np.zeros_like(ys)
    elif kind == 1:
        mix = ys
    elif kind == 2:
        mix = (np.sin(xs * 20 + ys * 6) > 0).astype(np.float32) * 0.6
    else:
        noise = cv2.GaussianBlur(rng.standard_normal((canvas, canvas)).astype(np.float32), (0, 0), canvas / 12)
        mix = np.clip(0.5 + noise / (noise.std() * 4 + 1e-6), 0, 1)
    image = first * (1 - mix[..., None]) + second * mix[..., None]
    return image


def draw_character(character: Character, canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """The still parts of the character (everything but the mouth): RGB float32 and alpha in 0..1."""
    image = np.zeros((canvas, canvas, 3), np.float32)
    alpha = np.zeros((canvas, canvas), np.float32)
    cx, cy = character.centre
    fa, fb = character.face_axes
    unit = canvas / 128.0
    cartoon = character.style == "cartoon"
    layers = []

    def add(shape, colour, *args, **kwargs):
        layers.append((shape, colour, args, kwargs))

    # Long hair behind the head, shoulders.
    if character.hair_style == 3:
        add("ellipse", character.hair, (cx, cy + 0.1 * fb), (fa * 1.22, fb * 1.15))
    add("ellipse", character.shirt, (cx, cy + fb * 1.95), (fa * 1.9, fb * 1.0))
    add("rect", character.skin, (cx - 0.4 * fa, cy + 0.6 * fb), (cx + 0.4 * fa, cy + 1.3 * fb))
    # Ears, face.
    for side in (-1, 1):
        add("ellipse", character.skin, (cx + side * fa * 0.98, cy + 0.02 * fb), (0.18 * fa, 0.24 * fb))
    add("ellipse", character.skin, (cx, cy), (fa, fb))
    for shape, colour, args, kwargs in layers:
        if shape == "ellipse":
            _ellipse(image, *args, colour, **kwargs)
            _ellipse(alpha, *args, 1.0, **kwargs)
        else:
            p0, p1 = (tuple(int(round(v)) for v in p) for p in args)
            cv2.rectangle(image, p0, p1, colour, -1)
            cv2.rectangle(alpha, p0, p1, 1.0, -1)
    if cartoon:
        _ellipse(image, (cx, cy), (fa, fb), tuple(0.45 * c for c in character.skin), 2)

    if character.style == "photo":
        # Soft directional light and skin texture that moves with the head.
        ys, xs = np.mgrid[0:canvas, 0:canvas].astype(np.float32)
        light = 1.08 - 0.35 * np.clip(((xs - cx + 0.5 * fa) ** 2 + (ys - cy + 0.5 * fb) ** 2) / (2.2 * fa * fb), 0, 1)
        image *= light[..., None]
        texture_rng = np.random.default_rng(character.texture_seed)
        texture = cv2.GaussianBlur(texture_rng.standard_normal((canvas, canvas)).astype(np.float32), (0, 0), 1.2)
        image += texture[..., None] * 9.0

    # Blush, eyes, brows, nose.
    if character.blush:
        for side in (-1, 1):
            _ellipse(image, (cx + side * 0.55 * fa, cy + 0.3 * fb), (0.16 * fa, 0.09 * fb), (235, 130, 140))
    for index, (ex, ey) in enumerate(character.eye_centres()):
        size = character.eye_size * unit
        _ellipse(image, (ex, ey), (7 * size, 4.5 * size), (250, 250, 250))
        _ellipse(image, (ex, ey), (3.4 * size, 3.4 * size), character.eye_colour)
        _ellipse(image, (ex, ey), (1.6 * size, 1.6 * size), (15, 15, 15))
        _ellipse(image, (ex + size, ey - size), (0.7 * size, 0.7 * size), (255, 255, 255))
        if cartoon:
            _ellipse(image, (ex, ey), (7 * size, 4.5 * size), (25, 25, 25), 1)
        brow_y = ey - 8 * size
        cv2.line(image, (int(ex - 7 * size), int(brow_y + 1)), (int(ex + 7 * size), int(brow_y - 1 + 2 * index)),
                 tuple(0.8 * c for c in character.hair), max(int(2 * unit), 1), cv2.LINE_AA)
        if character.glasses:
            _ellipse(image, (ex, ey), (10 * size, 8 * size), (30, 30, 40), max(int(1.5 * unit), 1))
    nose_y = cy + 0.22 * fb
    nose_colour = tuple(0.75 * c for c in character.skin)
    cv2.line(image, (int(cx), int(cy)), (int(cx - 3 * unit), int(nose_y)), nose_colour, max(int(unit), 1),
             cv2.LINE_AA)
    cv2.line(image, (int(cx - 3 * unit), int(nose_y)), (int(cx + 3 * unit), int(nose_y)), nose_colour,
             max(int(unit), 1), cv2.LINE_AA)

    # Hair on top, hat, earrings.
    if character.hair_style in (0, 3):
        _ellipse(image, (cx, cy - 0.55 * fb), (fa * 1.04, fb * 0.55), character.hair, start=180, end=360)
        _ellipse(alpha, (cx, cy - 0.55 * fb), (fa * 1.04, fb * 0.55), 1.0, start=180, end=360)
    elif character.hair_style == 1:
        for k in range(7):
            x = cx - fa + k * fa / 3
            pts = np.array([[x - 0.3 * fa, cy - 0.5 * fb], [x, cy - 1.25 * fb], [x + 0.3 * fa, cy - 0.5 * fb]],
                           np.int32)
            cv2.fillPoly(image, [pts], character.hair, cv2.LINE_AA)
            cv2.fillPoly(alpha, [pts], 1.0, cv2.LINE_AA)
    elif character.hair_style == 2:
        _ellipse(image, (cx, cy - 0.75 * fb), (fa * 0.8, fb * 0.3), character.hair)
        _ellipse(alpha, (cx, cy - 0.75 * fb), (fa * 0.8, fb * 0.3), 1.0)
    if character.hat is not None:
        p0, p1 = (int(cx - 0.9 * fa), int(cy - 1.45 * fb)), (int(cx + 0.9 * fa), int(cy - 0.7 * fb))
        cv2.rectangle(image, p0, p1, character.hat, -1)
        cv2.rectangle(alpha, p0, p1, 1.0, -1)
        q0, q1 = (int(cx - 1.3 * fa), int(cy - 0.78 * fb)), (int(cx + 1.3 * fa), int(cy - 0.68 * fb))
        cv2.rectangle(image, q0, q1, character.hat, -1)
        cv2.rectangle(alpha, q0, q1, 1.0, -1)
    if character.earrings:
        for side in (-1, 1):
            _ellipse(image, (cx + side * fa * 1.0, cy + 0.28 * fb), (2.2 * unit, 2.2 * unit), (240, 200, 60))
    return np.clip(image, 0, 255), np.clip(alpha, 0, 1)


def draw_mouth(image: np.ndarray, character: Character, opening: float, width: float) -> None:
    """Lips plus dark interior whose height follows `opening` (in place, canvas coordinates)."""
    mx, my = character.mouth_centre
    half_width, half_height = character.mouth_shape(opening, width)
    unit = image.shape[0] / 128.0
    lip = 2.4 * unit
    _ellipse(image, (mx, my), (half_width + 0.6 * unit, half_height + lip), character.lip)
    if half_height > 0.3 * unit:
        _ellipse(image, (mx, my), (half_width - 0.8 * unit, half_height), MOUTH_INTERIOR)
    else:
        cv2.line(image, (int(mx - half_width + unit), int(my)), (int(mx + half_width - unit), int(my)),
                 tuple(0.55 * c for c in character.lip), max(int(unit), 1), cv2.LINE_AA)
    if character.style == "cartoon":
        _ellipse(image, (mx, my), (half_width + 0.6 * unit, half_height + lip), tuple(0.6 * c for c in character.lip),
                 1)


def landmarks(character: Character, opening: float, width: float) -> np.ndarray:
    """Synthetic 478-point face mesh (canvas coordinates) for the character's current mouth."""
    points = np.zeros((NUM_LANDMARKS, 2), np.float32)
    cx, cy = character.centre
    fa, fb = character.face_axes
    # Anything not named below sits on the face between the eyes and the mouth (cheeks).
    filler = np.random.default_rng(7).uniform(-1, 1, (NUM_LANDMARKS, 2)).astype(np.float32)
    points[:] = np.array([cx, cy + 0.15 * fb]) + filler * np.array([0.55 * fa, 0.3 * fb])
    # Face oval clockwise from the forehead (10) with the chin (152) at the bottom.
    angles = np.linspace(-np.pi / 2, 1.5 * np.pi, len(FACE_OVAL), endpoint=False)
    for index, angle in zip(FACE_OVAL, angles):
        points[index] = (cx + fa * np.cos(angle), cy + fb * np.sin(angle))
    mx, my = character.mouth_centre
    half_width, half_height = character.mouth_shape(opening, width)
    lip = 2.4 * character.face_axes[0] / 32
    for contour, sign, extra in ((OUTER_LIP_UPPER, -1, lip), (OUTER_LIP_LOWER, 1, lip),
                                 (INNER_LIP_UPPER, -1, 0.0), (INNER_LIP_LOWER, 1, 0.0)):
        t = np.linspace(-1, 1, len(contour)) if contour[0] in (61, 78) else np.linspace(1, -1, len(contour))
        for index, u in zip(contour, t):
            points[index] = (mx + u * half_width, my + sign * (half_height + extra) * np.sqrt(max(1 - u * u, 0)))
    for index, height in NOSE_LINE:
        points[index] = (cx, cy + height * fb)
    points[98], points[327], points[2] = (cx - 0.12 * fa, cy + 0.22 * fb), (cx + 0.12 * fa, cy + 0.22 * fb), (
        cx, cy + 0.24 * fb)
    for (ex, ey), ring, iris in zip(character.eye_centres(), (EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT), (468, 473)):
        size = character.eye_size * character.face_axes[0] / 32
        ring_angles = np.linspace(np.pi, -np.pi, len(ring), endpoint=False)
        for index, angle in zip(ring, ring_angles):
            points[index] = (ex + 7 * size * np.cos(angle), ey + 4.5 * size * np.sin(angle))
        points[iris] = (ex, ey)
        for k in range(4):
            points[iris + 1 + k] = (ex + 3.4 * size * np.cos(k * np.pi / 2), ey + 3.4 * size * np.sin(k * np.pi / 2))
    return points
