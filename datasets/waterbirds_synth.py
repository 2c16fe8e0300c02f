"""waterbirds-synth: rendered birds on land or water, through the real image path.

Each image is a bird-like shape on a background: landbirds are small round birds with
legs and warm colours, waterbirds long-bodied, long-necked and pale; backgrounds are
green land with bushes or blue water with waves. y = waterbird, a = water background.
Training groups follow Waterbirds' proportions (3498/184/56/1057, scaled to n_train), so
the background agrees with the bird 95% of the time; val and test keep the class
balance and split each class evenly over backgrounds. Images are PNG files rendered once
(deterministically from the seed) under $SPURBENCH_CACHE/datasets/ with a sha256 of each
(checked on every load; a damaged copy is rendered again), and are encoded like
any image dataset; the default encoder is the tiny random-weight open_clip model, so
every result is flagged untrained. The point is testing the pipeline, not CLIP.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl

import bench

RENDER_VERSION = 1
WATERBIRDS_TRAIN = {(0, 0): 3498, (0, 1): 184, (1, 0): 56, (1, 1): 1057}
DEFAULTS = {"n_train": 1199, "n_val": 300, "n_test": 600, "size": 64}
log = logging.getLogger("bench.datasets")


def _counts(n_train: int, n_val: int, n_test: int) -> dict[str, dict[tuple[int, int], int]]:
    total = sum(WATERBIRDS_TRAIN.values())
    train = {k: max(1, round(c * n_train / total)) for k, c in WATERBIRDS_TRAIN.items()}
    p_y1 = (train[(1, 0)] + train[(1, 1)]) / sum(train.values())

    def balanced(n: int) -> dict[tuple[int, int], int]:
        n1 = max(2, round(n * p_y1))
        n0 = max(2, n - n1)
        return {(0, 0): n0 // 2, (0, 1): n0 - n0 // 2, (1, 0): n1 // 2, (1, 1): n1 - n1 // 2}

    return {"train": train, "val": balanced(n_val), "test": balanced(n_test)}


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int = 25) -> tuple:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def render(y: int, a: int, size: int, rng: np.random.Generator):  # noqa: ANN201
    """One RGB image (PIL) of a landbird (y=0) or waterbird (y=1) on land (a=0) or water."""
    from PIL import Image, ImageDraw

    s = size
    if a == 0:
        img = Image.new("RGB", (s, s), _jitter(rng, (95, 140, 60)))
        draw = ImageDraw.Draw(img)
        draw.rectangle([0, int(s * 0.7), s, s], fill=_jitter(rng, (120, 95, 55)))
        for _ in range(int(rng.integers(3, 7))):
            cx, cy, r = rng.uniform(0, s), rng.uniform(0, s * 0.7), rng.uniform(s * 0.06, s * 0.16)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_jitter(rng, (50, 100, 40)))
    else:
        img = Image.new("RGB", (s, s), _jitter(rng, (60, 110, 190)))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(4, 9))):
            x0, yy = rng.uniform(-s * 0.2, s), rng.uniform(0, s)
            draw.line([x0, yy, x0 + s * 0.3, yy], fill=_jitter(rng, (170, 200, 235)), width=1)
    scale = s * rng.uniform(0.85, 1.15)
    cx, cy = s * rng.uniform(0.38, 0.62), s * rng.uniform(0.45, 0.62)
    face = 1 if rng.random() < 0.5 else -1
    if y == 0:  # landbird: small round body, round head, short beak, legs, warm colours
        colour = _jitter(rng, [(150, 90, 40), (200, 60, 40), (220, 190, 60)][rng.integers(3)])
        bw, bh = scale * 0.16, scale * 0.12
        hx, hy, hr = cx + face * bw * 0.9, cy - bh * 1.0, scale * 0.07
        for dx in (-0.3, 0.3):
            draw.line([cx + dx * bw, cy + bh * 0.8, cx + dx * bw, cy + bh * 1.8], fill=(40, 30, 20),
                      width=max(1, s // 40))
        tip = 2.0
        beak_colour = (60, 50, 30)
    else:  # waterbird: long low body, long neck, head high, flat orange beak, pale colours
        colour = _jitter(rng, [(235, 235, 230), (150, 150, 155), (40, 40, 45)][rng.integers(3)])
        bw, bh = scale * 0.26, scale * 0.09
        hx, hy, hr = cx + face * bw * 0.8, cy - scale * 0.28, scale * 0.06
        draw.line([cx + face * bw * 0.6, cy, hx, hy], fill=colour, width=max(2, int(scale * 0.05)))
        tip = 2.6
        beak_colour = (235, 140, 30)
    draw.ellipse([cx - bw, cy - bh, cx + bw, cy + bh], fill=colour)
    draw.polygon([(cx - face * bw * 0.8, cy), (cx - face * bw * 1.5, cy - bh * 0.8),
                  (cx - face * bw * 1.4, cy + bh * 0.4)], fill=colour)
    draw.ellipse([hx - hr, hy - hr, hx + hr, hy + hr], fill=colour)
    beak = [(hx + face * hr, hy - hr * 0.3), (hx + face * hr * tip, hy),
            (hx + face * hr, hy + hr * 0.4)]
    draw.polygon(beak, fill=beak_colour)
    return img


def _options(options: bench.DatasetOptions) -> dict[str, int]:
    options.check_known("waterbirds-synth", DEFAULTS)
    out = {}
    for key, default in DEFAULTS.items():
        raw = options.extra.get(key, str(default))
        try:
            out[key] = int(raw)
        except ValueError:
            raise bench.UserError(f"--dataset-opt {key}={raw}: expected an integer") from None
        low = 16 if key == "size" else 8
        if out[key] < low:
            raise bench.UserError(f"--dataset-opt {key}={raw}: must be at least {low}")
    return out


def _rows(opts: dict[str, int]) -> list[tuple[str, int, int, str]]:
    rows = []
    for split, counts in _counts(opts["n_train"], opts["n_val"], opts["n_test"]).items():
        k = 0
        for (y, a), c in counts.items():
            for _ in range(c):
                rows.append((split, y, a, f"{split}/{k:05d}.png"))
                k += 1
    return rows


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _problem(folder: Path, rows: list) -> str | None:
    """Why a rendered copy cannot be used (None: it can): every image is checked against
    the sha256 written after rendering, since a damaged PNG would otherwise fail a run
    (or, worse, be encoded) long after it broke."""
    try:
        done = json.loads((folder / "done.json").read_text())
        sums = done["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return "no checksums"
    if not isinstance(sums, dict) or set(sums) != {r[3] for r in rows}:
        return "the checksums list other images"
    bad = []
    for _, _, _, item in rows:
        try:
            ok = _sha256(folder / item) == sums[item]
        except OSError:
            ok = False
        if not ok:
            bad.append(item)
    if bad:
        return f"{len(bad)} of {len(rows)} images damaged or missing, first: {folder / bad[0]}"
    return None


def _materialise(folder: Path, rows: list, size: int, seed: int) -> None:
    """Render every image into a temporary folder with a checksum manifest (done.json),
    then move it into place atomically; a copy whose images fail their checksums is
    rendered again (rendering is deterministic) with one warning."""
    from rich.progress import Progress

    if folder.exists():
        problem = _problem(folder, rows)
        if problem is None:
            return
        log.warning("rendered waterbirds-synth images in %s are unusable (%s); rendering them "
                    "again", folder, problem)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in its place, no permission: one line, not a traceback
        raise bench.UserError(
            f"cache folder {bench.cache_dir()} is unusable (cannot create {folder.parent}: "
            f"{exc.strerror or type(exc).__name__}); set SPURBENCH_CACHE to a folder you can "
            "write"
        ) from None
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for split in ("train", "val", "test"):
        (tmp / split).mkdir(parents=True)
    with Progress(transient=True) as bar:
        task = bar.add_task("rendering waterbirds-synth", total=len(rows))
        for i, (_, y, a, item) in enumerate(rows):
            render(y, a, size, np.random.default_rng([seed, i])).save(tmp / item)
            bar.advance(task)
    sums = {item: _sha256(tmp / item) for _, _, _, item in rows}
    (tmp / "done.json").write_text(
        json.dumps({"images": len(rows), "version": RENDER_VERSION, "sha256": sums})
    )
    old = folder.with_name(f".{folder.name}.old{os.getpid()}")
    try:
        if folder.exists():
            os.replace(folder, old)  # the damaged copy, out of the way
        os.replace(tmp, folder)
    except OSError:  # another process finished first: keep its copy
        if _problem(folder, rows) is not None:
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


@bench.dataset
class WaterbirdsSynth(bench.Dataset):
    name = "waterbirds-synth"
    description = "Rendered birds on land/water backgrounds (images -> encoder -> cache)"
    modality = "image"
    paper = "rendered stand-in for Sagawa et al. 2020 (synthetic)"
    classes = "2 (landbird, waterbird)"
    groups = "4 (bird × place)"
    embedded = True
    default_encoder = "openclip:spurbench-tiny:none"
    options_help = "n_train (1199), n_val (300), n_test (600), size (64 px)"

    def load(self, options: bench.DatasetOptions) -> bench.DatasetSpec:
        opts = _options(options)
        rows = _rows(opts)
        digest = hashlib.sha256(
            json.dumps({**opts, "seed": options.seed, "v": RENDER_VERSION}, sort_keys=True).encode()
        ).hexdigest()[:12]
        folder = bench.cache_dir() / "datasets" / self.name / digest
        _materialise(folder, rows, opts["size"], options.seed)
        md = pl.DataFrame({
            "id": [r[3] for r in rows], "item": [r[3] for r in rows],
            "y": [r[1] for r in rows], "a": [r[2] for r in rows], "split": [r[0] for r in rows],
        })
        return bench.DatasetSpec(
            name=self.name,
            metadata=md,
            class_names=["landbird", "waterbird"],
            attr_names=["land", "water"],
            item_kind="image",
            prompt_templates=["a photo of a {}.", "a drawing of a {}."],
            root=str(folder),
            synthetic=True,
            notes="rendered images; not a real benchmark",
        )
