"""Procedurally drawn talking characters (ours).

Each identity is a handful of random parameters (face shape, skin, hair, eyes, accessories,
background, drawing style). Per frame the pose (head turn) and the jaw (it drops as the mouth opens)
change the drawing. Frames are drawn at twice the video size and area-downsampled, so edges are
anti-aliased. Every frame also gets a synthetic 478-point face-mesh landmark set (mediapipe's
index convention for lips, jaw/face oval, nose, eyes and irises) so the team's mask code runs on the
toy world exactly as on real video.
"""

from __future__ import annotations

import dataclasses
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


# Drawing styles: soft-lit textured "photo", outlined "cartoon", flat cel-shaded "anime" with thick
# outlines, "painted" (brush-like colour noise), "shaded" (outlined, 3D-like shading and highlights).
STYLES = ("photo", "cartoon", "anime", "painted", "shaded")
OUTLINED = ("cartoon", "anime", "shaded")


@dataclass
class Character:
    """Random identity parameters; coordinates are in the 2x drawing canvas (size 2 * video frame).

    ``turn`` (-1..1, head turned to image left / right) and ``jaw`` (0..1, how far the jaw dropped)
    are the per-frame pose: :meth:`posed` sets them."""

    style: str  # one of STYLES
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
    turn: float = 0.0
    jaw: float = 0.0

    def posed(self, turn: float, opening: float) -> Character:
        """This character with the head turned by ``turn`` and the jaw dropped for ``opening``."""
        return dataclasses.replace(self, turn=float(turn), jaw=float(opening))

    @classmethod
    def random(cls, rng: np.random.Generator, canvas: int) -> Character:
        def pick(options):
            return tuple(int(v) for v in options[rng.integers(len(options))])

        def jitter(colour, amount=18):
            return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)

        unit = canvas / 128.0
        face_a = rng.uniform(29, 37) * unit
        return cls(
            style=STYLES[rng.integers(len(STYLES))],
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

    # Geometry in canvas coordinates. A head turn slides the features along the face (they sit on a
    # sphere: the nearer the middle, the further they move) and narrows the far side.
    @property
    def feature_shift(self) -> float:
        return 0.22 * self.turn * self.face_axes[0]

    @property
    def chin_drop(self) -> float:
        """How much lower the chin sits than with the mouth closed (the jaw opens with the mouth)."""
        return 0.12 * self.jaw * self.face_axes[1]

    @property
    def mouth_centre(self) -> tuple[float, float]:
        cx, cy = self.centre
        return cx + self.feature_shift, cy + self.mouth_drop * self.face_axes[1] + 0.35 * self.chin_drop

    def eye_centres(self) -> tuple[tuple[float, float], tuple[float, float]]:
        cx, cy = self.centre
        dx, y = self.eye_spacing * self.face_axes[0], cy - 0.12 * self.face_axes[1]
        shift = 0.8 * self.feature_shift
        left = cx - dx * (1 - 0.25 * max(self.turn, 0)) + shift
        right = cx + dx * (1 + 0.25 * min(self.turn, 0)) + shift
        return (left, y), (right, y)

    def eye_scales(self) -> tuple[float, float]:
        """Width factor of each eye: the far eye is seen at an angle."""
        return 1 - 0.3 * max(-self.turn, 0), 1 - 0.3 * max(self.turn, 0)

    def mouth_shape(self, opening: float, width: float) -> tuple[float, float]:
        """Half-width and interior half-height of the mouth for a target opening/width in 0..1."""
        half_width = self.mouth_width * self.face_axes[0] * (0.82 + 0.36 * width) * (1 - 0.15 * abs(self.turn))
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


def _face(draw, character: Character, colour, thickness=-1) -> None:
    """The face: an ellipse whose lower half reaches down to the dropped chin."""
    (cx, cy), (fa, fb) = character.centre, character.face_axes
    draw((cx, cy), (fa, fb), colour, thickness, start=180, end=360)
    draw((cx, cy), (fa, fb + character.chin_drop), colour, thickness, start=0, end=180)


def _shade(image: np.ndarray, character: Character, canvas: int) -> np.ndarray:
    """The style's lighting and surface over the drawn (still flat) character."""
    (cx, cy), (fa, fb) = character.centre, character.face_axes
    ys, xs = np.mgrid[0:canvas, 0:canvas].astype(np.float32)
    texture_rng = np.random.default_rng(character.texture_seed)
    light_x = cx - 0.5 * fa + character.feature_shift
    distance = ((xs - light_x) ** 2 + (ys - cy + 0.5 * fb) ** 2) / (2.2 * fa * fb)
    if character.style == "photo":  # soft directional light, fine skin texture
        image = image * (1.08 - 0.35 * np.clip(distance, 0, 1))[..., None]
        texture = cv2.GaussianBlur(texture_rng.standard_normal((canvas, canvas)).astype(np.float32), (0, 0), 1.2)
        image = image + texture[..., None] * 9.0
    elif character.style == "anime":  # cel shading: one hard shadow band on the side away from the light
        image = image * np.where(xs - cx - character.feature_shift > 0.45 * fa, 0.82, 1.0)[..., None]
    elif character.style == "painted":  # coloured brush noise at two scales, slight posterisation
        for sigma, amount in ((canvas / 40, 9.0), (1.5, 4.0)):
            noise = texture_rng.standard_normal((canvas, canvas, 3)).astype(np.float32)
            noise = cv2.GaussianBlur(noise, (0, 0), sigma)
            image = image + noise / (noise.std() + 1e-6) * amount
        image = np.round(image / 12.0) * 12.0
    elif character.style == "shaded":  # strong round shading and a specular highlight
        image = image * (1.15 - 0.55 * np.clip(distance, 0, 1) ** 0.8)[..., None]
        highlight = np.exp(-((xs - light_x + 0.1 * fa) ** 2 + (ys - cy + 0.45 * fb) ** 2) / (0.03 * fa * fb))
        image = image + highlight[..., None] * 60.0
    return image


def draw_character(character: Character, canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """The character but its mouth, in its current pose: RGB float32 and alpha in 0..1."""
    image = np.zeros((canvas, canvas, 3), np.float32)
    alpha = np.zeros((canvas, canvas), np.float32)
    cx, cy = character.centre
    fa, fb = character.face_axes
    unit = canvas / 128.0
    outlined = character.style in OUTLINED
    line_colour = (25, 20, 30) if character.style == "anime" else None
    outline = max(int(round((3 if character.style == "anime" else 2) * unit / 2)), 1)
    shift = character.feature_shift

    def both(centre, axes, colour, thickness=-1, start=0, end=360):
        _ellipse(image, centre, axes, colour, thickness, start=start, end=end)
        _ellipse(alpha, centre, axes, 1.0, thickness, start=start, end=end)

    # Long hair behind the head, shoulders, neck, ears, face.
    if character.hair_style == 3:
        both((cx, cy + 0.1 * fb), (fa * 1.22, fb * 1.15), character.hair)
    both((cx, cy + fb * 1.95), (fa * 1.9, fb * 1.0), character.shirt)
    p0 = (int(round(cx - 0.4 * fa)), int(round(cy + 0.6 * fb)))
    p1 = (int(round(cx + 0.4 * fa)), int(round(cy + 1.3 * fb)))
    cv2.rectangle(image, p0, p1, character.skin, -1)
    cv2.rectangle(alpha, p0, p1, 1.0, -1)
    for side in (-1, 1):
        # The ear on the side the head turns away from hides behind the face.
        ear_x = cx + side * fa * (0.98 - 0.2 * max(side * character.turn, 0))
        both((ear_x, cy + 0.02 * fb), (0.18 * fa, 0.24 * fb), character.skin)
    _face(lambda c, a, col, th, start, end: both(c, a, col, th, start, end), character, character.skin)
    if outlined:
        _face(lambda c, a, col, th, start, end: _ellipse(image, c, a, col, th, start=start, end=end), character,
              line_colour or tuple(0.45 * c for c in character.skin), outline)
    image = _shade(image, character, canvas)

    # Blush, eyes, brows, nose.
    if character.blush:
        for side in (-1, 1):
            _ellipse(image, (cx + side * 0.55 * fa + shift, cy + 0.3 * fb), (0.16 * fa, 0.09 * fb), (235, 130, 140))
    eye_scale = 1.25 if character.style == "anime" else 1.0
    for index, ((ex, ey), squash) in enumerate(zip(character.eye_centres(), character.eye_scales())):
        size = character.eye_size * unit * eye_scale
        _ellipse(image, (ex, ey), (7 * size * squash, 4.5 * size), (250, 250, 250))
        _ellipse(image, (ex, ey), (3.4 * size * squash, 3.4 * size), character.eye_colour)
        _ellipse(image, (ex, ey), (1.6 * size * squash, 1.6 * size), (15, 15, 15))
        _ellipse(image, (ex + size, ey - size), (0.7 * size, 0.7 * size), (255, 255, 255))
        if outlined:
            _ellipse(image, (ex, ey), (7 * size * squash, 4.5 * size), line_colour or (25, 25, 25), outline)
        brow_y = ey - 8 * size
        cv2.line(image, (int(ex - 7 * size * squash), int(brow_y + 1)),
                 (int(ex + 7 * size * squash), int(brow_y - 1 + 2 * index)),
                 tuple(0.8 * c for c in character.hair), max(int(2 * unit), 1), cv2.LINE_AA)
        if character.glasses:
            _ellipse(image, (ex, ey), (10 * size * squash, 8 * size), (30, 30, 40), max(int(1.5 * unit), 1))
    nose_x, nose_y = cx + shift, cy + 0.22 * fb
    nose_colour = line_colour or tuple(0.75 * c for c in character.skin)
    cv2.line(image, (int(nose_x), int(cy)), (int(nose_x - 3 * unit), int(nose_y)), nose_colour, max(int(unit), 1),
             cv2.LINE_AA)
    cv2.line(image, (int(nose_x - 3 * unit), int(nose_y)), (int(nose_x + 3 * unit), int(nose_y)), nose_colour,
             max(int(unit), 1), cv2.LINE_AA)

    # Hair on top, hat, earrings.
    if character.hair_style in (0, 3):
        both((cx, cy - 0.55 * fb), (fa * 1.04, fb * 0.55), character.hair, start=180, end=360)
    elif character.hair_style == 1:
        for k in range(7):
            x = cx - fa + k * fa / 3 + 0.3 * shift
            pts = np.array([[x - 0.3 * fa, cy - 0.5 * fb], [x, cy - 1.25 * fb], [x + 0.3 * fa, cy - 0.5 * fb]],
                           np.int32)
            cv2.fillPoly(image, [pts], character.hair, cv2.LINE_AA)
            cv2.fillPoly(alpha, [pts], 1.0, cv2.LINE_AA)
    elif character.hair_style == 2:
        both((cx + 0.3 * shift, cy - 0.75 * fb), (fa * 0.8, fb * 0.3), character.hair)
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
    if character.style in OUTLINED:
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
        lower = fb + character.chin_drop if np.sin(angle) > 0 else fb
        points[index] = (cx + fa * np.cos(angle), cy + lower * np.sin(angle))
    cx = cx + character.feature_shift  # the features (not the outline) move with a head turn
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
    eye_scale = 1.25 if character.style == "anime" else 1.0
    for (ex, ey), squash, ring, iris in zip(character.eye_centres(), character.eye_scales(),
                                            (EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT), (468, 473)):
        size = character.eye_size * character.face_axes[0] / 32 * eye_scale
        ring_angles = np.linspace(np.pi, -np.pi, len(ring), endpoint=False)
        for index, angle in zip(ring, ring_angles):
            points[index] = (ex + 7 * size * squash * np.cos(angle), ey + 4.5 * size * np.sin(angle))
        points[iris] = (ex, ey)
        for k in range(4):
            points[iris + 1 + k] = (ex + 3.4 * size * squash * np.cos(k * np.pi / 2),
                                    ey + 3.4 * size * np.sin(k * np.pi / 2))
    return points
