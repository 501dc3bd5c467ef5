"""The demo QA project: a deterministic generator of its exports and images.

The committed part of the demo project is ``data/demo/labelqa.toml`` and
``data/demo/contract.schema.json``. This module generates the rest: twelve weekly
native exports (ISO weeks 2026-W36 .. 2026-W47) and one PNG per item. It follows
a small fictional team whose habits make the weekly numbers move in ways you can
explain:

========  =====================================================  =====================
who       habit                                                  changes
========  =====================================================  =====================
ann-01    excellent: tight boxes, right labels, clean captions   -
ann-02    sloppy boxes (edges off by 15-30 % of the box side),   better from v3
          misses small objects                                   (2026-10-26, W44)
ann-03    invents objects in captions, names brands              better from v2
                                                                 (2026-09-28, W40)
ann-04    leaves out the required ``weather`` field (~30 %)      better from v3
ann-05    confuses classes (bus/car, dog/person); "truck"        -
ann-06    normal; keeps using v1 in the first week of v2         -
ann-07    normal; accepts nearly every model draft unchanged     -
ann-08    normal; keeps using v2 in the first week of v3         -
lead-01   gold answers for the pinned items                      -
model-v1  drafts (pre-fills) for ~5 % of the items               -
========  =====================================================  =====================

Everything is drawn from ``numpy.random.default_rng`` streams seeded from ``seed``
and the item number, so the same seed gives byte-identical files on every run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import orjson
from PIL import Image

__all__ = [
    "DEMO_DIR",
    "GOLD_ITEMS",
    "LABEL_COLORS",
    "DemoLine",
    "DemoPlan",
    "Scene",
    "demo_config_files",
    "generate_demo",
    "guideline_in_force",
    "habit_for",
    "in_stable_sample",
    "plan_demo",
    "render_scene",
    "week_label",
]

DEMO_DIR = Path(__file__).resolve().parents[1] / "data" / "demo"
CONFIG_FILES = ("labelqa.toml", "contract.schema.json")

# --- the project, as written in data/demo/labelqa.toml (tests keep the two in step) ---

LABELS = ("car", "person", "bicycle", "dog", "traffic light", "bus")
WEATHERS = ("sunny", "cloudy", "rainy", "night")
TAGS = ("outdoor", "indoor", "street", "park", "crowded", "traffic", "animal")
SAMPLE_RATE = 0.10
SAMPLE_SALT = "demo"
# Gold items: every 100th item from img-000050, so that every week has a few.
GOLD_ITEMS = tuple(f"img-{50 + 100 * k:06d}" for k in range(30))
_GOLD_SET = frozenset(GOLD_ITEMS)
FIRST_MONDAY = dt.date(2026, 8, 31)  # Monday of 2026-W36
N_WEEKS = 12
GUIDELINES = (
    ("v1", dt.date(2026, 8, 31)),
    ("v2", dt.date(2026, 9, 28)),  # captions: no guessed brands or objects
    ("v3", dt.date(2026, 10, 26)),  # tight boxes; weather is required
)

WIDTH, HEIGHT = 320, 240
ANNOTATORS = tuple(f"ann-{k:02d}" for k in range(1, 9))
GOLD_ANNOTATOR = "lead-01"
MODEL = "model-v1"
RUBBER_STAMPER = "ann-07"
# annotator -> the version they are late for: they keep the previous one for a week
LATE_FOR = {"ann-06": "v2", "ann-08": "v3"}

UTC = dt.timezone.utc

# --- drawing ---------------------------------------------------------------------

LABEL_COLORS = {
    "car": (220, 40, 40),
    "person": (255, 150, 0),
    "bicycle": (0, 160, 150),
    "dog": (150, 90, 40),
    "traffic light": (250, 230, 50),
    "bus": (40, 90, 220),
}
LABEL_SHAPES = {
    "car": "rectangle",
    "person": "ellipse",
    "bicycle": "ellipse",
    "dog": "ellipse",
    "traffic light": "rectangle",
    "bus": "rectangle",
}
LABEL_LETTERS = {
    "car": "C", "person": "P", "bicycle": "B", "dog": "D", "traffic light": "T", "bus": "U",
}
# (min w, max w, min h, max h) in pixels
_SIZES = {
    "car": (50, 90, 25, 40),
    "person": (14, 24, 36, 60),
    "bicycle": (30, 46, 20, 30),
    "dog": (24, 38, 16, 24),
    "traffic light": (10, 14, 28, 40),
    "bus": (100, 140, 45, 65),
}
_LABEL_WEIGHTS = np.array([0.28, 0.30, 0.11, 0.10, 0.10, 0.11])
SMALL_AREA = 700  # px²; objects below this are the ones people miss

_BACKGROUND_COLORS = {
    "sky-sunny": (135, 206, 250),
    "sky-cloudy": (170, 175, 185),
    "sky-rainy": (95, 110, 130),
    "sky-night": (20, 24, 48),
    "street-day": (105, 105, 110),
    "street-night": (40, 40, 46),
    "park-day": (110, 170, 90),
    "park-night": (30, 60, 35),
    "sun": (255, 236, 140),
    "moon": (230, 230, 210),
    "cloud": (215, 218, 224),
    "rain": (175, 190, 210),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}
_PALETTE_NAMES = tuple(_BACKGROUND_COLORS) + LABELS
_INDEX = {name: k for k, name in enumerate(_PALETTE_NAMES)}
_PALETTE = [c for name in _PALETTE_NAMES
            for c in (_BACKGROUND_COLORS.get(name) or LABEL_COLORS[name])]
_HORIZON = int(HEIGHT * 0.42)

# 3 x 5 bitmap letters, so the pictures do not depend on installed fonts
_GLYPHS = {
    "C": ("111", "100", "100", "100", "111"),
    "P": ("111", "101", "111", "100", "100"),
    "B": ("110", "101", "110", "101", "110"),
    "D": ("110", "101", "101", "101", "110"),
    "T": ("111", "010", "010", "010", "010"),
    "U": ("101", "101", "101", "101", "111"),
}
_LETTER_INK = {"person": "black", "traffic light": "black"}


@dataclass(frozen=True)
class DemoObject:
    """One object as drawn: its true box is ``[x, y, w, h]`` in whole pixels."""

    label: str
    x: int
    y: int
    w: int
    h: int

    @property
    def bbox_xywh(self) -> list[float]:
        return [float(self.x), float(self.y), float(self.w), float(self.h)]


@dataclass(frozen=True)
class Scene:
    """One item: the picture's truth, from which every annotation is derived."""

    number: int
    item_id: str
    week: int  # 0 .. N_WEEKS - 1
    weather: str
    ground: str  # "street" | "park"
    objects: tuple[DemoObject, ...]
    tags: tuple[str, ...]

    @property
    def uri(self) -> str:
        return f"images/{self.item_id}.png"


def _make_scene(number: int, week: int, seed: int) -> Scene:
    rng = np.random.default_rng([seed, 1, number])
    weather = WEATHERS[int(rng.choice(4, p=[0.40, 0.30, 0.15, 0.15]))]
    ground = "street" if rng.random() < 0.65 else "park"
    wanted = int(rng.choice(6, p=[0.15, 0.25, 0.22, 0.18, 0.12, 0.08])) + 1
    objects: list[DemoObject] = []
    for _ in range(wanted):
        label = LABELS[int(rng.choice(len(LABELS), p=_LABEL_WEIGHTS))]
        w_lo, w_hi, h_lo, h_hi = _SIZES[label]
        for _attempt in range(40):
            w = int(rng.integers(w_lo, w_hi + 1))
            h = int(rng.integers(h_lo, h_hi + 1))
            lowest = _HORIZON - 20 if label == "traffic light" else _HORIZON + 10
            bottom = int(rng.integers(max(lowest, h), HEIGHT))
            x = int(rng.integers(0, WIDTH - w + 1))
            candidate = DemoObject(label, x, bottom - h, w, h)
            if not any(_near(candidate, other) for other in objects):
                objects.append(candidate)
                break
    counts = {label: sum(o.label == label for o in objects) for label in LABELS}
    tags = {"outdoor", ground}
    if counts["person"] >= 3 or len(objects) >= 5:
        tags.add("crowded")
    if counts["traffic light"] or counts["car"] + counts["bus"] >= 2:
        tags.add("traffic")
    if counts["dog"]:
        tags.add("animal")
    return Scene(
        number=number,
        item_id=f"img-{number:06d}",
        week=week,
        weather=weather,
        ground=ground,
        objects=tuple(objects),
        tags=tuple(t for t in TAGS if t in tags),
    )


def _near(a: DemoObject, b: DemoObject, margin: int = 2) -> bool:
    """Boxes overlap or touch: objects never do, so each box centre shows its own colour."""
    return not (a.x + a.w + margin <= b.x or b.x + b.w + margin <= a.x
                or a.y + a.h + margin <= b.y or b.y + b.h + margin <= a.y)


def _backgrounds() -> dict[tuple[str, str], np.ndarray]:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    out = {}
    for weather in WEATHERS:
        for ground in ("street", "park"):
            night = weather == "night"
            img = np.full((HEIGHT, WIDTH), _INDEX[f"sky-{weather}"], np.uint8)
            img[_HORIZON:] = _INDEX[f"{ground}-{'night' if night else 'day'}"]
            if weather == "sunny":
                img[(xx - 285) ** 2 + (yy - 30) ** 2 < 18**2] = _INDEX["sun"]
            elif weather == "night":
                img[(xx - 285) ** 2 + (yy - 30) ** 2 < 12**2] = _INDEX["moon"]
            elif weather == "cloudy":
                for cx, cy, rx, ry in ((70, 30, 45, 14), (200, 45, 60, 16)):
                    img[((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1] = _INDEX["cloud"]
            else:
                img[(xx + 3 * yy) % 23 == 0] = _INDEX["rain"]
            out[(weather, ground)] = img
    return out


_BACKGROUND_CACHE: dict[tuple[str, str], np.ndarray] = {}


def render_scene(scene: Scene) -> Image.Image:
    """Draw a scene: a palette image whose object pixels are exactly ``LABEL_COLORS``."""
    if not _BACKGROUND_CACHE:
        _BACKGROUND_CACHE.update(_backgrounds())
    img = _BACKGROUND_CACHE[(scene.weather, scene.ground)].copy()
    for obj in scene.objects:
        region = img[obj.y:obj.y + obj.h, obj.x:obj.x + obj.w]
        if LABEL_SHAPES[obj.label] == "rectangle":
            region[:] = _INDEX[obj.label]
        else:
            yy, xx = np.mgrid[0:obj.h, 0:obj.w]
            inside = (((xx + 0.5 - obj.w / 2) / (obj.w / 2)) ** 2
                      + ((yy + 0.5 - obj.h / 2) / (obj.h / 2)) ** 2) <= 1
            region[inside] = _INDEX[obj.label]
        _draw_letter(img, obj)
    image = Image.fromarray(img)
    image.putpalette(_PALETTE)
    return image


def _draw_letter(img: np.ndarray, obj: DemoObject) -> None:
    """The label's letter, centred above the box centre (the centre pixel stays clear)."""
    if obj.h < 16:
        return
    if LABEL_SHAPES[obj.label] == "ellipse":
        scale = 2 if obj.w >= 20 and obj.h >= 36 else 1
    else:
        scale = 3 if obj.w >= 30 and obj.h >= 40 else 2 if obj.w >= 12 and obj.h >= 26 else 1
    cx, cy = obj.x + obj.w // 2, obj.y + obj.h // 2
    top, left = cy - 3 - 5 * scale, cx - (3 * scale) // 2
    ink = _INDEX[_LETTER_INK.get(obj.label, "white")]
    for r, row in enumerate(_GLYPHS[LABEL_LETTERS[obj.label]]):
        for c, bit in enumerate(row):
            if bit == "1":
                img[top + r * scale:top + (r + 1) * scale,
                    left + c * scale:left + (c + 1) * scale] = ink


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# --- habits -------------------------------------------------------------------------


@dataclass(frozen=True)
class Habit:
    """How one annotator labels: chances and sizes of their usual mistakes."""

    jitter: tuple[float, float] = (0.02, 0.05)  # box edges move by up to this share of a side
    miss_small: float = 0.03  # chance to leave out an object under SMALL_AREA
    confusions: tuple[tuple[str, str, float], ...] = (("bus", "car", 0.01),)
    label_typo: float = 0.0  # writes "truck" (not in the contract) for a bus
    weather_error: float = 0.04
    skip_weather: float = 0.0  # leaves the required field out
    tag_noise: float = 0.08
    tag_typo: float = 0.004  # "outdoors" instead of "outdoor"
    hedge: float = 0.03
    short: float = 0.015
    long: float = 0.004
    omit_minor: float = 0.10  # a boxed traffic light or dog is not named in the caption
    sentence: float = 0.02  # lower-case start or no final full stop
    invent: float = 0.0  # names an object that has no box
    brand: float = 0.0
    model_caption: bool = False


_NORMAL = Habit()
_HABITS = {
    "ann-01": Habit(jitter=(0.005, 0.015), miss_small=0.0, confusions=(), weather_error=0.01,
                    tag_noise=0.02, tag_typo=0.0, hedge=0.0, short=0.0, long=0.0,
                    omit_minor=0.02, sentence=0.0),
    "ann-02": Habit(jitter=(0.15, 0.30), miss_small=0.35),
    "ann-03": Habit(invent=0.45, brand=0.25),
    "ann-04": Habit(skip_weather=0.30),
    "ann-05": Habit(confusions=(("bus", "car", 0.35), ("car", "bus", 0.08),
                                ("dog", "person", 0.25), ("person", "dog", 0.02)),
                    label_typo=0.05),
    "ann-06": _NORMAL,
    "ann-07": _NORMAL,
    "ann-08": _NORMAL,
    GOLD_ANNOTATOR: Habit(jitter=(0.0, 0.0), miss_small=0.0, confusions=(), weather_error=0.0,
                          tag_noise=0.0, tag_typo=0.0, hedge=0.0, short=0.0, long=0.0,
                          omit_minor=0.0, sentence=0.0),
    MODEL: Habit(jitter=(0.05, 0.08), miss_small=0.20, confusions=(("bus", "car", 0.05),),
                 weather_error=0.12, tag_noise=0.20, tag_typo=0.0, short=0.0, long=0.0,
                 omit_minor=0.0, sentence=0.0, model_caption=True),
}
# annotator -> (the guideline version from which they improve, the habit from then on)
_IMPROVES = {
    "ann-02": ("v3", Habit(jitter=(0.03, 0.07), miss_small=0.06)),
    "ann-03": ("v2", Habit(invent=0.03, brand=0.01)),
    "ann-04": ("v3", Habit(skip_weather=0.02)),
}
_VERSION_ORDER = {version: k for k, (version, _) in enumerate(GUIDELINES)}


def habit_for(annotator_id: str, guideline_version: str) -> Habit:
    """The habit an annotator shows when working under a guideline version."""
    change = _IMPROVES.get(annotator_id)
    if change and _VERSION_ORDER[guideline_version] >= _VERSION_ORDER[change[0]]:
        return change[1]
    return _HABITS[annotator_id]


# --- time ---------------------------------------------------------------------------


def week_start(week: int) -> dt.datetime:
    day = FIRST_MONDAY + dt.timedelta(weeks=week)
    return dt.datetime(day.year, day.month, day.day, tzinfo=UTC)


def week_label(week: int) -> str:
    year, number, _ = (FIRST_MONDAY + dt.timedelta(weeks=week)).isocalendar()
    return f"{year}-W{number:02d}"


def _week_of(when: dt.datetime) -> int:
    return (when.date() - FIRST_MONDAY).days // 7


def _timestamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


_END = week_start(N_WEEKS) - dt.timedelta(hours=1)


def guideline_in_force(when: dt.datetime) -> str:
    current = GUIDELINES[0][0]
    for version, effective in GUIDELINES:
        if when.date() >= effective:
            current = version
    return current


def guideline_used(annotator_id: str, when: dt.datetime) -> str:
    """The version in force, except for a late annotator in that version's first week."""
    version = guideline_in_force(when)
    if LATE_FOR.get(annotator_id) == version:
        effective = dict(GUIDELINES)[version]
        if when.date() < effective + dt.timedelta(days=7):
            return GUIDELINES[_VERSION_ORDER[version] - 1][0]
    return version


def _work_time(rng: np.random.Generator, week: int) -> dt.datetime:
    day = int(rng.choice(7, p=[0.19, 0.19, 0.19, 0.19, 0.19, 0.025, 0.025]))
    seconds = int(rng.integers(8 * 3600, 18 * 3600))
    return week_start(week) + dt.timedelta(days=day, seconds=seconds)


def in_stable_sample(item_id: str, *, salt: str = SAMPLE_SALT, rate: float = SAMPLE_RATE,
                     pinned: Iterable[str] = _GOLD_SET) -> bool:
    """DESIGN.md's stable sample: a hash of salt + item id below ``rate``, or pinned."""
    digest = hashlib.sha256((salt + item_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate or item_id in pinned


# --- annotations --------------------------------------------------------------------

_NOUNS = {
    "car": (("car", "cars"),),
    "person": (("person", "people"), ("man", "men"), ("woman", "women"),
               ("pedestrian", "pedestrians")),
    "bicycle": (("bicycle", "bicycles"), ("bike", "bikes")),
    "dog": (("dog", "dogs"),),
    "traffic light": (("traffic light", "traffic lights"),),
    "bus": (("bus", "buses"),),
    "truck": (("truck", "trucks"),),
}
_ADJECTIVES = {"car": ("red", ""), "bus": ("blue", "city"), "dog": ("brown", "")}
_VERBS = {"car": "parked", "person": "walking", "bicycle": "leaning on a pole",
          "dog": "running", "traffic light": "shining", "bus": "waiting", "truck": "parked"}
_NUMBERS = {1: "a", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
_SCENES = {
    ("sunny", "street"): ("on a sunny street", "on a bright street in the sun"),
    ("cloudy", "street"): ("on a cloudy street", "on a grey, overcast street"),
    ("rainy", "street"): ("on a rainy street", "on a wet street in the rain"),
    ("night", "street"): ("on a street at night", "on a dark street at night"),
    ("sunny", "park"): ("in a sunny park", "in a park on a sunny day"),
    ("cloudy", "park"): ("in a park on a cloudy day", "in a grey park under clouds"),
    ("rainy", "park"): ("in a park in the rain", "in a rainy park"),
    ("night", "park"): ("in a park at night", "in a dark park at night"),
}
_CAR_BRANDS = ("Toyota", "BMW", "Mercedes")
_BRAND_CLAUSES = ("next to a Coca-Cola billboard", "in front of a Starbucks",
                  "near a Nike store", "under an Adidas poster")
_INVENT_PLACES = ("nearby", "in the background", "close by")
_LONG_TAIL = ("Nothing else of note happens in the picture, and the light, the colors and "
              "the shadows all look just as one would expect for this kind of place at this "
              "time of the day.")
_CONFUSABLE_WEATHER = {"sunny": "cloudy", "cloudy": "rainy", "rainy": "cloudy",
                       "night": "rainy"}


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _phrase(rng: np.random.Generator, label: str, count: int, brand: str | None = None) -> str:
    singular, plural = _pick(rng, _NOUNS[label])
    adjective = _pick(rng, _ADJECTIVES.get(label, ("",)))
    if brand:
        adjective = f"{adjective} {brand}".strip()
    noun = singular if count == 1 else plural
    return " ".join(w for w in (_NUMBERS.get(count, str(count)), adjective, noun) if w)


def _join(phrases: list[str]) -> str:
    if len(phrases) <= 2:
        return " and ".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _caption(rng: np.random.Generator, labels: list[str], weather: str, ground: str,
             habit: Habit) -> str:
    """A caption from the labels the annotator boxed, with their usual text mistakes."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    named = list(counts)
    if len(named) > 1 and rng.random() < habit.omit_minor:
        minor = [x for x in named if x in ("traffic light", "dog", "bicycle")]
        if minor:
            named.remove(minor[-1])
    brand = None
    if rng.random() < habit.brand:
        brand = _pick(rng, _CAR_BRANDS) if "car" in named else _pick(rng, _BRAND_CLAUSES)
    phrases = [_phrase(rng, x, counts[x], brand if x == "car" else None) for x in named]
    scene = _pick(rng, _SCENES[(weather, ground)])

    if not phrases:
        text = f"An empty scene {scene}."
    elif habit.model_caption:
        text = f"The image appears to show {_join(phrases)} {scene}."
    elif rng.random() < habit.short:
        text = _capital(phrases[0]) + _pick(rng, (".", " outside."))
    elif rng.random() < habit.hedge:
        text = _pick(rng, ("There appears to be {} {}.", "It seems to show {} {}.",
                           "Probably {} {}.")).format(_join(phrases), scene)
    else:
        template = int(rng.integers(4))
        verb = _VERBS[named[0]]
        if template == 0 and len(phrases) == 1:
            text = f"{_capital(phrases[0])} {verb} {scene}."
        elif template == 0:
            text = f"{_capital(phrases[0])} {verb} next to {_join(phrases[1:])} {scene}."
        elif template == 1:
            text = f"{_capital(scene)}, {_join(phrases)} can be seen."
        elif template == 2:
            be = "is" if phrases[0].startswith("a ") else "are"
            text = f"There {be} {_join(phrases)} {scene}."
        else:
            text = f"A photo of {_join(phrases)} {scene}."

    if brand and "car" not in named and phrases:
        text = text[:-1] + f", {brand}."
    if rng.random() < habit.invent:
        absent = [x for x in LABELS if x not in counts]
        if absent:
            invented = _phrase(rng, _pick(rng, absent), 1)
            text = text[:-1] + f", with {invented} {_pick(rng, _INVENT_PLACES)}."
    if rng.random() < habit.long:
        text = f"{text} {_LONG_TAIL}"
    if rng.random() < habit.sentence:
        text = text[:1].lower() + text[1:] if rng.random() < 0.5 else text[:-1]
    return text


def _annotate(scene: Scene, habit: Habit, rng: np.random.Generator) -> tuple[list, dict]:
    """Boxes and fields as this habit would label the scene."""
    boxes = []
    for obj in scene.objects:
        if obj.w * obj.h < SMALL_AREA and rng.random() < habit.miss_small:
            continue
        label = obj.label
        for true, written, chance in habit.confusions:
            if label == true and rng.random() < chance:
                label = written
                break
        if label == "bus" and rng.random() < habit.label_typo:
            label = "truck"
        jitter = rng.uniform(*habit.jitter) if habit.jitter[1] > 0 else 0.0
        dx0, dy0, dx1, dy1 = rng.uniform(-jitter, jitter, size=4) if jitter else (0, 0, 0, 0)
        x0 = min(max(obj.x + dx0 * obj.w, 0.0), WIDTH - 2.0)
        y0 = min(max(obj.y + dy0 * obj.h, 0.0), HEIGHT - 2.0)
        x1 = min(max(obj.x + obj.w + dx1 * obj.w, x0 + 2.0), float(WIDTH))
        y1 = min(max(obj.y + obj.h + dy1 * obj.h, y0 + 2.0), float(HEIGHT))
        x0, y0 = round(float(x0), 1), round(float(y0), 1)
        boxes.append({"label": label, "bbox": [x0, y0, round(float(x1) - x0, 1),
                                               round(float(y1) - y0, 1)]})

    weather = scene.weather
    if rng.random() < habit.weather_error:
        weather = _CONFUSABLE_WEATHER[weather]
    tags = set(scene.tags)
    if rng.random() < habit.tag_noise and len(tags) > 1:
        tags.discard(_pick(rng, sorted(tags - {"outdoor"})))
    if rng.random() < habit.tag_noise / 2:
        tags.add(_pick(rng, [t for t in TAGS if t not in tags and t != "indoor"] or ["street"]))
    tag_list = [t for t in TAGS if t in tags]
    if "outdoor" in tag_list and rng.random() < habit.tag_typo:
        tag_list[tag_list.index("outdoor")] = "outdoors"

    caption = _caption(rng, [b["label"] for b in boxes], weather, scene.ground, habit)
    fields: dict = {"caption": caption}
    if rng.random() >= habit.skip_weather:
        fields["weather"] = weather
    fields["tags"] = tag_list
    return boxes, fields


# --- the plan -----------------------------------------------------------------------


@dataclass
class DemoLine:
    """One line of one weekly export, before it is written."""

    week: int  # export file index
    when: dt.datetime  # sort key inside the file
    key: str  # tie-breaker
    data: bytes  # the line, without its newline
    kind: str  # annotation | correction | duplicate | broken
    record: dict | None = None
    broken: str | None = None  # why the line cannot be placed
    schema_errors: tuple[str, ...] = ()  # the JSON Schema errors meant to be there
    check_errors: tuple[str, ...] = ()  # the contract errors a schema cannot state


@dataclass
class DemoPlan:
    """Everything the generator writes, in memory."""

    seed: int
    scenes: list[Scene]
    lines: list[DemoLine] = field(default_factory=list)

    @property
    def records(self) -> list[dict]:
        """Every record that is a placeable JSON object (corrections included once each)."""
        return [x.record for x in self.lines if x.record is not None and x.kind != "duplicate"]

    def summary(self) -> dict:
        """Counts, for the README, the CLI and the tests."""
        records = [x.record for x in self.lines if x.kind == "annotation"]
        by_role: dict[str, int] = {}
        for r in records:
            by_role[r["role"]] = by_role.get(r["role"], 0) + 1
        sample = [s.item_id for s in self.scenes if in_stable_sample(s.item_id)]
        return {
            "items": len(self.scenes),
            "annotations": len(records),
            "by_role": dict(sorted(by_role.items())),
            "sample_items": len(sample),
            "gold_items": len(GOLD_ITEMS),
            "prefilled": sum(bool(r.get("prefilled")) for r in records),
            "lines": len(self.lines),
            "broken": sorted(x.broken for x in self.lines if x.broken),
            "schema_errors": sum(bool(x.schema_errors) for x in self.lines
                                 if x.kind in ("annotation", "correction")),
            "check_errors": sorted(e for x in self.lines for e in x.check_errors),
            "corrections": sum(x.kind == "correction" for x in self.lines),
            "duplicates": sum(x.kind == "duplicate" for x in self.lines),
        }


def _schema_errors(record: dict) -> tuple[str, ...]:
    errors = []
    fields = record["fields"]
    if "weather" not in fields:
        errors.append("/fields: required weather")
    if any(b["label"] not in LABELS for b in record["boxes"]):
        errors.append("/boxes/*/label: enum")
    if any(t not in TAGS for t in fields.get("tags", ())):
        errors.append("/fields/tags/*: enum")
    return tuple(errors)


class _Ids:
    """``a-<8 hex>`` from item, annotator and time; unique within the demo."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, item_id: str, annotator_id: str, when: dt.datetime) -> str:
        salt = 0
        while True:
            text = f"{item_id}|{annotator_id}|{_timestamp(when)}|{salt}"
            candidate = "a-" + hashlib.sha256(text.encode()).hexdigest()[:8]
            if candidate not in self.seen:
                self.seen.add(candidate)
                return candidate
            salt += 1


def _record(scene: Scene, annotation_id: str, annotator_id: str, role: str,
            when: dt.datetime, version: str, boxes: list, fields: dict, **extra) -> dict:
    record = {
        "item_id": scene.item_id,
        "annotation_id": annotation_id,
        "annotator_id": annotator_id,
        "role": role,
        "submitted_at": _timestamp(when),
        "guideline_version": version,
        "image": {"uri": scene.uri, "width": WIDTH, "height": HEIGHT},
        "boxes": boxes,
        "fields": fields,
    }
    record.update(extra)
    return record


def _line(record: dict, when: dt.datetime, kind: str = "annotation") -> DemoLine:
    return DemoLine(week=_week_of(when), when=when, key=record["annotation_id"],
                    data=orjson.dumps(record), kind=kind, record=record,
                    schema_errors=_schema_errors(record))


def _copy(record: dict) -> dict:
    return orjson.loads(orjson.dumps(record))


def plan_demo(*, seed: int = 2026) -> DemoPlan:
    """Build the whole demo in memory: scenes, every export line and what is wrong with it.

    Parameters
    ----------
    seed : int
        Seeds every random stream; the same seed gives the same plan, line for line.
    """
    rng = np.random.default_rng([seed, 0])
    per_week = rng.integers(230, 271, size=N_WEEKS)
    scenes: list[Scene] = []
    for week, count in enumerate(per_week):
        for _ in range(int(count)):
            scenes.append(_make_scene(len(scenes) + 1, week, seed))
    plan = DemoPlan(seed=seed, scenes=scenes)
    ids = _Ids()
    actor_index = {a: k for k, a in enumerate((*ANNOTATORS, GOLD_ANNOTATOR, MODEL), 1)}
    stamped = 0
    prefill_weights = np.array([0.4 if a == RUBBER_STAMPER else 0.6 / 7 for a in ANNOTATORS])

    def annotate(scene: Scene, annotator_id: str, when: dt.datetime, purpose: int = 0):
        version = guideline_used(annotator_id, when)
        stream = np.random.default_rng([seed, 2, scene.number, actor_index[annotator_id],
                                        purpose])
        boxes, fields = _annotate(scene, habit_for(annotator_id, version), stream)
        return version, boxes, fields

    for scene in scenes:
        first = _work_time(rng, scene.week)
        gold = scene.item_id in _GOLD_SET
        prefilled = not gold and rng.random() < 0.05
        if prefilled:
            annotator = ANNOTATORS[int(rng.choice(len(ANNOTATORS), p=prefill_weights))]
        else:
            annotator = ANNOTATORS[int(rng.integers(len(ANNOTATORS)))]

        if gold:
            when = week_start(scene.week) + dt.timedelta(hours=7, minutes=scene.number % 60)
            version = guideline_in_force(when)
            boxes = [{"label": o.label, "bbox": o.bbox_xywh} for o in scene.objects]
            fields = {"caption": _caption(np.random.default_rng([seed, 3, scene.number]),
                                          [o.label for o in scene.objects], scene.weather,
                                          scene.ground, _HABITS[GOLD_ANNOTATOR]),
                      "weather": scene.weather, "tags": list(scene.tags)}
            plan.lines.append(_line(_record(
                scene, ids(scene.item_id, GOLD_ANNOTATOR, when), GOLD_ANNOTATOR, "gold", when,
                version, boxes, fields, prefilled=False), when))

        version, boxes, fields = annotate(scene, annotator, first)
        extra: dict = {"prefilled": False}
        if prefilled:
            drafted = max(first - dt.timedelta(minutes=int(rng.integers(20, 240))),
                          week_start(scene.week) + dt.timedelta(hours=1))
            model_version, draft_boxes, draft_fields = annotate(scene, MODEL, drafted)
            plan.lines.append(_line(_record(
                scene, ids(scene.item_id, MODEL, drafted), MODEL, "model", drafted,
                model_version, draft_boxes, draft_fields), drafted))
            draft = {"boxes": draft_boxes, "fields": draft_fields}
            if annotator == RUBBER_STAMPER:
                stamped += 1
                edits = stamped % 40 == 0  # nearly every draft goes through as it came
                reviewed = True
            else:
                reviewed = rng.random() < 0.85
                edits = reviewed
            if not edits:
                boxes, fields = _copy(draft_boxes), _copy(draft_fields)
            extra = {"prefilled": True, "reviewed": reviewed}
            if reviewed:
                extra["reviewed_by"] = annotator
            extra["draft"] = draft
        plan.lines.append(_line(_record(scene, ids(scene.item_id, annotator, first), annotator,
                                        "annotator", first, version, boxes, fields, **extra),
                                first))

        if in_stable_sample(scene.item_id):
            others = [a for a in ANNOTATORS if a != annotator]
            count = 1 if rng.random() < 0.6 else 2
            picked = rng.choice(len(others), size=count, replace=False)
            for k in sorted(int(i) for i in picked):
                # a working hour on the same day or within the next week
                day = dt.datetime.combine(first.date(), dt.time(), UTC)
                later = day + dt.timedelta(days=int(rng.integers(0, 8)),
                                           seconds=int(rng.integers(8 * 3600, 18 * 3600)))
                if later < first + dt.timedelta(hours=1) or later > _END:
                    later = first + dt.timedelta(seconds=int(rng.integers(3600, 4 * 3600)))
                version, boxes, fields = annotate(scene, others[k], later)
                plan.lines.append(_line(_record(
                    scene, ids(scene.item_id, others[k], later), others[k], "annotator",
                    later, version, boxes, fields, prefilled=False), later))

    _add_contract_errors(plan)
    _add_correction_and_duplicate(plan, ids)
    _add_broken_lines(plan, ids, annotate)
    plan.lines.sort(key=lambda x: (x.week, x.when, x.key))
    return plan


def _first(plan: DemoPlan, week: int, annotator: str | None, *, sample: bool,
           need_boxes: bool = True, secondary: bool = False) -> DemoLine:
    """The earliest plain annotation line fitting a description (a deterministic target)."""
    seen_items: set[str] = set()
    for line in sorted(plan.lines, key=lambda x: (x.when, x.key)):
        r = line.record
        if r is None or r["role"] != "annotator":
            continue
        repeat = r["item_id"] in seen_items
        seen_items.add(r["item_id"])
        if (line.week == week and line.kind == "annotation" and not line.schema_errors
                and not line.check_errors and not r.get("prefilled")
                and (annotator is None or r["annotator_id"] == annotator)
                and in_stable_sample(r["item_id"]) == sample
                and (not need_boxes or r["boxes"]) and repeat == secondary):
            return line
    raise LookupError(f"no demo line for week {week}, {annotator}")


def _rewrite(line: DemoLine, record: dict, check: str) -> None:
    line.record = record
    line.data = orjson.dumps(record)
    line.schema_errors = _schema_errors(record)
    line.check_errors = (*line.check_errors, check)


def _add_contract_errors(plan: DemoPlan) -> None:
    """Valid JSON that breaks the contract in ways a JSON Schema cannot state."""
    line = _first(plan, 3, "ann-06", sample=False)
    record = _copy(line.record)
    box = max(record["boxes"], key=lambda b: b["bbox"][0])
    box["bbox"][0] = round(WIDTH - box["bbox"][2] + 10.0, 1)  # 10 px past the right edge
    _rewrite(line, record, "box outside the image")

    line = _first(plan, 6, "ann-08", sample=False)
    record = _copy(line.record)
    record["boxes"][0]["bbox"][2] = 0.0
    _rewrite(line, record, "non-positive box size")

    line = _first(plan, 7, None, sample=True, secondary=True)
    record = _copy(line.record)
    record["image"].update(width=640, height=480)  # the tool exported the original size
    _rewrite(line, record, "image size differs from the item's first annotation")


def _add_correction_and_duplicate(plan: DemoPlan, ids: _Ids) -> None:
    # ann-04 fixes a record that lacked the weather; the fix arrives in next week's export.
    original = next(
        x for x in sorted(plan.lines, key=lambda x: (x.when, x.key))
        if x.week == 2 and x.record and x.record["annotator_id"] == "ann-04"
        and x.kind == "annotation" and "weather" not in x.record["fields"]
        and not x.record.get("prefilled") and not in_stable_sample(x.record["item_id"]))
    scene = plan.scenes[int(original.record["item_id"][4:]) - 1]
    when = week_start(3) + dt.timedelta(days=1, hours=10)
    fixed = _copy(original.record)
    fixed["submitted_at"] = _timestamp(when)
    fixed["guideline_version"] = guideline_used("ann-04", when)
    fixed["fields"] = {"caption": fixed["fields"]["caption"], "weather": scene.weather,
                       "tags": fixed["fields"]["tags"]}
    plan.lines.append(_line(fixed, when, kind="correction"))

    # W41's first annotator line is sent again, unchanged, at the top of W42's export.
    again = min((x for x in plan.lines if x.week == 5 and x.kind == "annotation"
                 and x.record["role"] == "annotator"),
                key=lambda x: (x.when, x.key))
    plan.lines.append(replace(again, week=6, kind="duplicate"))


def _add_broken_lines(plan: DemoPlan, ids: _Ids, annotate) -> None:
    """Lines the ingest must quarantine: one of each kind, spread over the weeks."""
    kinds = (
        (1, "truncated JSON"),
        (2, "not a JSON object (array)"),
        (4, "NaN in a bbox"),
        (5, "missing item_id"),
        (7, "submitted_at is not a date"),
        (9, "invalid UTF-8"),
        (10, "truncated JSON"),
    )
    for n, (week, kind) in enumerate(kinds):
        scene = next(s for s in plan.scenes if s.week == week and len(s.objects) >= 2
                     and not in_stable_sample(s.item_id) and s.number % 7 == n)
        annotator = ANNOTATORS[n % len(ANNOTATORS)]
        when = week_start(week) + dt.timedelta(days=2, hours=11, minutes=7 * n)
        version, boxes, fields = annotate(scene, annotator, when, purpose=1)
        record = _record(scene, ids(scene.item_id, annotator, when), annotator, "annotator",
                         when, version, boxes, fields, prefilled=False)
        if kind == "truncated JSON":
            data = orjson.dumps(record)
            data = data[: int(len(data) * 0.6)]
        elif kind.startswith("not a JSON object"):
            data = orjson.dumps([record])
        elif kind == "NaN in a bbox":
            record["boxes"][0]["bbox"][1] = 123456.5
            data = orjson.dumps(record).replace(b"123456.5", b"NaN")
        elif kind == "missing item_id":
            del record["item_id"]
            data = orjson.dumps(record)
        elif kind == "submitted_at is not a date":
            record["submitted_at"] = "last Tuesday"
            data = orjson.dumps(record)
        else:  # a Latin-1 "é" where UTF-8 was expected
            record["fields"]["caption"] = record["fields"]["caption"][:-1] + " near a café."
            data = orjson.dumps(record).replace("é".encode(), b"\xe9")
        plan.lines.append(DemoLine(week=week, when=when, key=f"~broken-{n}", data=data,
                                   kind="broken", broken=kind))


# --- writing ------------------------------------------------------------------------


def demo_config_files() -> list[Path]:
    """The committed files of the demo project, to copy into another project folder."""
    return [DEMO_DIR / name for name in CONFIG_FILES]


def generate_demo(project_dir: Path, *, seed: int = 2026) -> list[Path]:
    """Write the demo's weekly exports and images into a project folder.

    Writes ``exports/2026-W36.jsonl`` .. ``exports/2026-W47.jsonl`` (native JSON Lines,
    sorted by ``submitted_at``) and ``images/img-NNNNNN.png``. Files from an earlier run
    that match those names but are not part of this one are removed; nothing else in the
    folder is touched. The config (``labelqa.toml``, the contract) is not written: copy
    :func:`demo_config_files` for that.

    Parameters
    ----------
    project_dir : Path
        The QA project folder.
    seed : int
        The same seed gives byte-identical files.

    Returns
    -------
    list of Path
        The export files, in week order.
    """
    project_dir = Path(project_dir)
    plan = plan_demo(seed=seed)
    exports, images = project_dir / "exports", project_dir / "images"
    exports.mkdir(parents=True, exist_ok=True)
    images.mkdir(parents=True, exist_ok=True)

    image_names = set()
    for scene in plan.scenes:
        name = f"{scene.item_id}.png"
        image_names.add(name)
        (images / name).write_bytes(_png_bytes(render_scene(scene)))
    for stale in images.glob("img-*.png"):
        if stale.name not in image_names:
            stale.unlink()

    paths = []
    for week in range(N_WEEKS):
        path = exports / f"{week_label(week)}.jsonl"
        path.write_bytes(b"".join(x.data + b"\n" for x in plan.lines if x.week == week))
        paths.append(path)
    for stale in exports.glob("*-W*.jsonl"):
        if stale not in paths:
            stale.unlink()
    return paths
