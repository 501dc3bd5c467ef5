"""A deterministic native export of N annotations with the demo project's shape.

The project is the demo's (``data/demo/labelqa.toml`` and its contract) with the stable
sample at 20 % and the guideline log stretched over 26 ISO weeks (2026-W36 .. 2027-W09),
two changes: v2 from week 9 (captions), v3 from week 18 (weather).

The export, one line per annotation, sorted by ``submitted_at``:

- items enter in one of the 26 weeks; an item in the stable sample is labeled by two or
  three annotators (60 / 40), any other item by one; 2 % of the sample items and the 30
  pinned items also get a ``gold`` answer (``lead-01``); 3 % of the other items get a
  ``model`` draft and a pre-filled annotation carrying it;
- about 4 boxes per annotation (1 + Poisson(3) objects per item, each annotator misses,
  confuses and jitters a few), a 10-30 word caption naming what was boxed, the weather
  and tags;
- a few percent contract errors (no ``weather``, a ``truck`` label, an ``outdoors`` tag,
  a box past the image edge) and policy violations (a brand, an invented object; hedging
  as a warning), and one truncated line in 10,000 (quarantined).

Everything is drawn from one ``numpy.random.default_rng(seed)`` stream in a fixed
order, so the same (N, seed) gives a byte-identical file.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from metrics.sample import sample_scores

__all__ = ["GenerateStats", "N_WEEKS", "generate_export", "write_project"]

DEMO_DIR = Path(__file__).resolve().parents[1] / "data" / "demo"

N_WEEKS = 26
FIRST_MONDAY = dt.date(2026, 8, 31)          # Monday of 2026-W36
GUIDELINES = (("v1", 0), ("v2", 9), ("v3", 18))  # version, first week in force
SAMPLE_RATE = 0.20
SALT = "demo"
PINNED = tuple(f"img-{50 + 100 * k:06d}" for k in range(30))

LABELS = ("car", "person", "bicycle", "dog", "traffic light", "bus")
LABEL_P = np.array([0.28, 0.30, 0.11, 0.10, 0.10, 0.11])
# (min w, max w, min h, max h) in pixels, on a 640 x 480 image
SIZES = np.array([(80, 180, 40, 90), (24, 50, 60, 140), (50, 90, 35, 60),
                  (40, 80, 28, 50), (16, 28, 50, 80), (180, 280, 80, 130)], dtype=float)
WIDTH, HEIGHT = 640, 480
WEATHERS = ("sunny", "cloudy", "rainy", "night")
TAGS = ("outdoor", "indoor", "street", "park", "crowded", "traffic", "animal")
ANNOTATORS = tuple(f"ann-{k:02d}" for k in range(1, 25))
SLOPPY = frozenset({"ann-02", "ann-09", "ann-17"})   # loose boxes, miss more
GOLD, MODEL = "lead-01", "model-v1"

NOUNS = {
    "car": ("car", "cars"), "person": ("person", "people"), "bicycle": ("bicycle", "bicycles"),
    "dog": ("dog", "dogs"), "traffic light": ("traffic light", "traffic lights"),
    "bus": ("bus", "buses"),
}
NUMBERS = ("no", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
# Words that name no label of [labels] (so only boxed labels are ever mentioned).
FILLER = ("near", "the", "old", "stone", "wall", "under", "tall", "green", "trees", "with",
          "shadows", "across", "wet", "pavement", "beside", "a", "small", "shop", "window",
          "and", "an", "empty", "bench", "along", "quiet", "corner", "in", "front", "of",
          "brick", "buildings", "while", "clouds", "drift", "over", "rooftops", "behind",
          "low", "fence", "by", "narrow", "sidewalk", "some", "leaves", "on", "ground")
SCENES = ("on a street", "in a park", "at a crossing", "next to a square", "on a bridge")
BRANDS = ("Toyota", "Nike", "Starbucks", "BMW")
HEDGES = ("There appears to be", "It seems to show", "Probably")

UTC = dt.timezone.utc


def week_start(week: int) -> dt.datetime:
    day = FIRST_MONDAY + dt.timedelta(weeks=week)
    return dt.datetime(day.year, day.month, day.day, tzinfo=UTC)


def week_label(week: int) -> str:
    year, number, _ = (FIRST_MONDAY + dt.timedelta(weeks=week)).isocalendar()
    return f"{year}-W{number:02d}"


_EPOCH0 = week_start(0).timestamp()
_END = week_start(N_WEEKS).timestamp() - 3600


def write_project(folder: Path) -> Path:
    """The demo project's config and contract in ``folder``, sample at 20 %, guideline
    log over 26 weeks. Returns the config path."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEMO_DIR / "contract.schema.json", folder / "contract.schema.json")
    text = (DEMO_DIR / "labelqa.toml").read_text(encoding="utf-8")
    text, n = re.subn(r"(?m)^rate = 0\.10", f"rate = {SAMPLE_RATE:.2f}", text)
    if n != 1:
        raise RuntimeError("demo labelqa.toml: cannot find '[sample] rate = 0.10'")
    for version, first_week in GUIDELINES:
        day = (FIRST_MONDAY + dt.timedelta(weeks=first_week)).isoformat()
        text, n = re.subn(rf'(version = "{version}"\neffective = )"[0-9-]+"',
                          rf'\g<1>"{day}"', text)
        if n != 1:
            raise RuntimeError(f"demo labelqa.toml: cannot find guideline {version}")
    path = folder / "labelqa.toml"
    path.write_text(text, encoding="utf-8")
    (folder / "images").mkdir(exist_ok=True)
    return path


@dataclass
class GenerateStats:
    lines: int
    items: int
    sample_items: int
    annotations: int          # placeable lines (every role)
    boxes: int
    broken: int
    bytes: int

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _guideline(ts: float) -> str:
    week = int((ts - _EPOCH0) // (7 * 86400))
    current = GUIDELINES[0][0]
    for version, first in GUIDELINES:
        if week >= first:
            current = version
    return current


def _stamp(ts: float) -> str:
    return dt.datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def generate_export(path: Path, n_annotations: int, *, seed: int = 0) -> GenerateStats:
    """Write ``n_annotations`` export lines to ``path`` (JSON Lines); see the module doc."""
    rng = np.random.default_rng(seed)
    n = int(n_annotations)
    # ~1.3 lines per item; draw items until the lines are covered.
    n_items = max(40, int(n / 1.25) + 50)
    item_ids = [f"img-{k:06d}" for k in range(1, n_items + 1)]
    if n_items > 999_999:
        raise ValueError("at most 999,999 items fit the contract's item_id pattern")
    pinned = np.isin(np.arange(1, n_items + 1), [int(p[4:]) for p in PINNED])
    in_sample = (sample_scores(item_ids, SALT) < SAMPLE_RATE) | pinned
    extra = np.where(rng.random(n_items) < 0.6, 1, 2) * in_sample
    gold = pinned | (in_sample & (rng.random(n_items) < 0.02))
    drafted = ~in_sample & ~gold & (rng.random(n_items) < 0.03)
    per_item = 1 + extra + gold + drafted
    cum = np.cumsum(per_item)
    n_items = int(np.searchsorted(cum, n, side="left")) + 1
    item_ids = item_ids[:n_items]
    in_sample, extra, gold, drafted = (a[:n_items] for a in (in_sample, extra, gold, drafted))
    item_week = np.sort(rng.integers(0, N_WEEKS, size=n_items))

    # The truth of each item: objects, weather, ground.
    n_obj = np.clip(1 + rng.poisson(3.0, size=n_items), 1, 10)
    obj_start = np.concatenate([[0], np.cumsum(n_obj)[:-1]])
    total_obj = int(n_obj.sum())
    obj_label = rng.choice(len(LABELS), size=total_obj, p=LABEL_P)
    s = SIZES[obj_label]
    ow = s[:, 0] + rng.random(total_obj) * (s[:, 1] - s[:, 0])
    oh = s[:, 2] + rng.random(total_obj) * (s[:, 3] - s[:, 2])
    ox = rng.random(total_obj) * (WIDTH - ow)
    oy = rng.random(total_obj) * (HEIGHT - oh)
    weather = rng.choice(4, size=n_items, p=[0.4, 0.3, 0.15, 0.15]).tolist()
    park = (rng.random(n_items) < 0.35).tolist()
    # Python scalars from here on: the record loop is plain Python (and orjson).
    obj_label, ox, oy, ow, oh = (a.tolist() for a in (obj_label, ox, oy, ow, oh))
    obj_start, n_obj = obj_start.tolist(), n_obj.tolist()

    # Who labels what, when.
    lines: list[tuple[float, int, bytes]] = []
    seq = 0
    n_boxes = 0
    first_ts = (np.array([week_start(int(w)).timestamp() for w in range(N_WEEKS)])[item_week]
                + rng.integers(0, 5, size=n_items) * 86400
                + rng.integers(8 * 3600, 18 * 3600, size=n_items))
    later_days = rng.integers(0, 8, size=(n_items, 2))
    later_secs = rng.integers(3600, 8 * 3600, size=(n_items, 2))
    first_ann = rng.integers(0, len(ANNOTATORS), size=n_items)
    others = rng.integers(1, len(ANNOTATORS), size=(n_items, 2))
    # per-annotation noise draws come from this stream, in order
    noise = np.random.default_rng([seed, 1])

    def annotation(i: int, who: str, ts: float, role: str, *, exact: bool = False) -> dict:
        nonlocal seq, n_boxes
        k0, k = int(obj_start[i]), int(n_obj[i])
        sloppy = who in SLOPPY
        u = noise.random((k, 8)).tolist()
        boxes = []
        counts: dict[str, int] = {}
        for j in range(k):
            lab = int(obj_label[k0 + j])
            x, y, w, h = ox[k0 + j], oy[k0 + j], ow[k0 + j], oh[k0 + j]
            if not exact:
                if u[j][0] < (0.12 if sloppy else 0.03):
                    continue                       # missed
                if u[j][1] < 0.02:
                    lab = (lab + 1 + int(u[j][2] * 5)) % 6   # confused
                jit = 0.18 if sloppy else 0.04
                dx0, dy0, dx1, dy1 = ((v * 2 - 1) * jit for v in u[j][3:7])
                x0 = min(max(x + dx0 * w, 0.0), WIDTH - 2.0)
                y0 = min(max(y + dy0 * h, 0.0), HEIGHT - 2.0)
                x1 = min(max(x + w + dx1 * w, x0 + 2.0), float(WIDTH))
                y1 = min(max(y + h + dy1 * h, y0 + 2.0), float(HEIGHT))
                x, y, w, h = x0, y0, x1 - x0, y1 - y0
            name = LABELS[lab]
            counts[name] = counts.get(name, 0) + 1
            boxes.append({"label": name, "bbox": [round(x, 1), round(y, 1), round(w, 1),
                                                  round(h, 1)]})
        r = noise.random(12).tolist()
        # contract errors
        if not exact and boxes and r[0] < 0.005:
            boxes[0]["label"] = "truck"
        if not exact and boxes and r[1] < 0.002:
            b = boxes[-1]["bbox"]
            b[0] = round(WIDTH - b[2] + 12.0, 1)     # 12 px past the right edge
        wx = int(weather[i]) if (exact or r[2] >= 0.04) else (int(weather[i]) + 1) % 4
        tags = ["outdoor", "park" if park[i] else "street"]
        if len(boxes) >= 5:
            tags.append("crowded")
        if counts.get("car", 0) + counts.get("bus", 0) >= 2 or "traffic light" in counts:
            tags.append("traffic")
        if "dog" in counts:
            tags.append("animal")
        if not exact and r[3] < 0.003:
            tags[0] = "outdoors"
        fields = {"caption": _caption(counts, r, noise, exact), "weather": WEATHERS[wx],
                  "tags": tags}
        if not exact and r[4] < 0.02:
            del fields["weather"]
        seq += 1
        n_boxes += len(boxes)
        return {
            "item_id": item_ids[i], "annotation_id": f"a-{seq:08x}", "annotator_id": who,
            "role": role, "submitted_at": _stamp(ts), "guideline_version": _guideline(ts),
            "image": {"uri": f"images/{item_ids[i]}.png", "width": WIDTH, "height": HEIGHT},
            "boxes": boxes, "fields": fields,
        }

    def emit(ts: float, rec: dict) -> None:
        lines.append((ts, len(lines), orjson.dumps(rec)))

    for i in range(n_items):
        ts = float(first_ts[i])
        a0 = int(first_ann[i])
        who = ANNOTATORS[a0]
        if gold[i]:
            g_ts = week_start(int(item_week[i])).timestamp() + 7 * 3600 + i % 3600
            emit(g_ts, {**annotation(i, GOLD, g_ts, "gold", exact=True), "prefilled": False})
        if drafted[i]:
            d_ts = ts - 3600
            draft = annotation(i, MODEL, d_ts, "model")
            emit(d_ts, draft)
            rec = annotation(i, who, ts, "annotator")
            if noise.random() < 0.5:      # accepted unchanged
                rec["boxes"], rec["fields"] = draft["boxes"], draft["fields"]
            rec.update(prefilled=True, reviewed=True, reviewed_by=who,
                       draft={"boxes": draft["boxes"], "fields": draft["fields"]})
            emit(ts, rec)
        else:
            emit(ts, {**annotation(i, who, ts, "annotator"), "prefilled": False})
        for e in range(int(extra[i])):
            other = ANNOTATORS[(a0 + int(others[i, e]) + e) % len(ANNOTATORS)]
            if other == who:
                other = ANNOTATORS[(a0 + 1) % len(ANNOTATORS)]
            day0 = ts - (ts - _EPOCH0) % 86400
            later = day0 + int(later_days[i, e]) * 86400 + 8 * 3600 + int(later_secs[i, e])
            if later <= ts or later > _END:
                later = ts + int(later_secs[i, e])
            emit(later, {**annotation(i, other, later, "annotator"), "prefilled": False})

    lines.sort(key=lambda t: (t[0], t[1]))
    lines = lines[:n]
    broken = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for k, (_, _, data) in enumerate(lines):
            if k % 10_000 == 5_000:
                data = data[: len(data) * 3 // 5]    # truncated JSON: quarantined
                broken += 1
            fh.write(data)
            fh.write(b"\n")
    return GenerateStats(lines=len(lines), items=n_items, sample_items=int(in_sample.sum()),
                         annotations=len(lines) - broken, boxes=n_boxes, broken=broken,
                         bytes=path.stat().st_size)


def _caption(counts: dict[str, int], r: list[float], noise: np.random.Generator,
             exact: bool) -> str:
    """10-30 words: the boxed labels, a scene, filler; sometimes a brand, an invented
    object or a hedge."""
    phrases = []
    for name, c in counts.items():
        singular, plural = NOUNS[name]
        phrases.append(f"{NUMBERS[min(c, 10)]} {singular if c == 1 else plural}")
    if not phrases:
        head = "An empty scene"
    elif len(phrases) == 1:
        head = phrases[0]
    else:
        head = ", ".join(phrases[:-1]) + " and " + phrases[-1]
    if not exact and phrases and r[5] < 0.03:
        head = f"{HEDGES[int(r[6] * 3)]} {head}"
    words = head.split()
    words += SCENES[int(r[7] * len(SCENES))].split()
    if not exact and r[8] < 0.015:
        words += ["beside", "a", BRANDS[int(r[9] * len(BRANDS))], "sign"]
    if not exact and r[10] < 0.02:
        absent = [x for x in LABELS if x not in counts]
        if absent:
            words += ["with", "a", NOUNS[absent[int(r[11] * len(absent))]][0], "nearby"]
    target = 10 + int(noise.integers(0, 21))
    if len(words) < target:
        pick = noise.integers(0, len(FILLER), size=target - len(words))
        words += [FILLER[p] for p in pick]
    text = " ".join(words)
    return text[:1].upper() + text[1:] + "."


if __name__ == "__main__":  # pragma: no cover - manual use
    import sys

    out = Path(sys.argv[2] if len(sys.argv) > 2 else "export.jsonl")
    print(generate_export(out, int(sys.argv[1])).to_json())
