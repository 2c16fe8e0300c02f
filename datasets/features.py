"""features: bring your own embeddings, from an .npz or a parquet file.

.npz (read with allow_pickle=False): x [N, D], y [N], a [N], split [N] (0/1/2 or
train/val/test strings); optional class_text [C, D] (class-prompt embeddings, which
enable the prompt head and zero-shot), attr_text [A, D] (attribute-prompt embeddings, one
per attribute value, for text-debiasing methods such as orth-proj), class_attr_text
[C, A, D] (embeddings of "class with attribute" prompts, orth-proj's calibration pairs),
class_names, attr_names, id.
parquet: columns y, a, split, optional id, and the features either as one list column
`x` or as numbered columns x0, x1, ...; class_text, attr_text and class_attr_text from
--dataset-opt class_text=FILE.npy (attr_text=..., class_attr_text=...).
Options: path=FILE (or --data-root FILE), classes=A,B, attributes=A,B, class_text=FILE.npy,
attr_text=FILE.npy, class_attr_text=FILE.npy, name=NAME (the dataset's name in results,
default features). Encoder: identity.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl

import bench

KNOWN = ("path", "classes", "attributes", "class_text", "attr_text", "class_attr_text", "name")


def _npz(path: Path) -> tuple[pl.DataFrame, np.ndarray, dict[str, np.ndarray]]:
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":  # .npz is a zip archive
            raise bench.UserError(f"{path}: not an .npz file (no zip archive inside); write it "
                                  "with numpy.savez(path, x=..., y=..., a=..., split=...)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as exc:
        raise bench.UserError(f"{path}: cannot read ({exc}); object arrays are refused") from None
    except Exception as exc:
        raise bench.UserError(f"{path}: not a readable .npz file ({type(exc).__name__})") from None
    missing = [k for k in ("x", "y", "a", "split") if k not in arrays]
    if missing:
        raise bench.UserError(
            f"{path}: missing array(s) {', '.join(missing)}; it has {', '.join(sorted(arrays))}"
        )
    x = arrays["x"]
    if x.ndim != 2:
        raise bench.UserError(f"{path}: array 'x' has shape {x.shape}; expected [N, D]")
    if x.shape[0] == 0:
        raise bench.UserError(f"{path}: array 'x' has no rows")
    cols = {}
    for k in ("y", "a", "split", "id"):
        if k in arrays:
            v = arrays[k]
            if v.shape != (x.shape[0],):
                raise bench.UserError(
                    f"{path}: array '{k}' has shape {v.shape}; expected ({x.shape[0]},) like x"
                )
            cols[k] = v.tolist()
    return pl.DataFrame(cols), x, arrays


def _parquet(path: Path) -> tuple[pl.DataFrame, np.ndarray]:
    try:
        df = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise bench.UserError(f"{path}: cannot read as parquet ({type(exc).__name__})") from None
    missing = [c for c in ("y", "a", "split") if c not in df.columns]
    if missing:
        raise bench.UserError(f"{path}: missing column(s) {', '.join(missing)}")
    if "x" in df.columns:
        try:
            x = np.asarray(df["x"].to_list(), dtype=np.float32)
        except ValueError:
            raise bench.UserError(f"{path}: column 'x' rows have different lengths") from None
    else:
        numbered = sorted((c for c in df.columns if re.fullmatch(r"x\d+", c)),
                          key=lambda c: int(c[1:]))
        if not numbered:
            raise bench.UserError(f"{path}: no feature column 'x' (a list) nor x0, x1, ...")
        x = df.select(numbered).to_numpy().astype(np.float32)
    if x.ndim != 2:
        raise bench.UserError(f"{path}: features have shape {x.shape}; expected [N, D]")
    return df, x


@bench.dataset
class Features(bench.Dataset):
    name = "features"
    description = "Your own embeddings: an .npz or parquet file with x, y, a, split"
    modality = "features"
    download_hint = "bring your own: --dataset-opt path=FILE.npz|.parquet (see docs/datasets.md)"
    options_help = (
        "path=FILE, classes=A,B, attributes=A,B, class_text=FILE.npy, attr_text=FILE.npy, "
        "class_attr_text=FILE.npy, name=NAME"
    )

    def load(self, options: bench.DatasetOptions) -> bench.DatasetSpec:
        options.check_known(self.name, KNOWN)
        given = options.extra.get("path")
        if given:
            path = Path(given)
        elif options.data_root is not None and Path(options.data_root).is_file():
            path = Path(options.data_root)
        else:
            raise bench.UserError(
                "dataset 'features': give the file with --dataset-opt path=FILE.npz "
                "(or .parquet), or --data-root FILE"
            )
        if not path.is_file():
            raise bench.UserError(f"dataset 'features': file {path} not found")
        arrays: dict[str, np.ndarray] = {}
        if path.suffix == ".npz":
            df, x, arrays = _npz(path)
        elif path.suffix == ".parquet":
            df, x = _parquet(path)
        else:
            raise bench.UserError(f"{path}: expected an .npz or .parquet file")
        if not np.isfinite(x).all():
            row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
            raise bench.UserError(f"{path}: features of data row {row + 1} are not finite")
        y0 = bench.int_column(df, "y", path)
        a0 = bench.int_column(df, "a", path)
        classes = self._names(options, "classes", arrays.get("class_names"), "class", y0)
        attrs = self._names(options, "attributes", arrays.get("attr_names"), "attribute", a0)
        y = bench.int_column(df, "y", path, len(classes))
        a = bench.int_column(df, "a", path, len(attrs))
        split = bench.split_column(df, "split", path)
        dim = x.shape[1]
        text = self._text(options, "class_text", arrays, path, (len(classes), dim),
                          "one embedding per class")
        attr_text = self._text(options, "attr_text", arrays, path, (len(attrs), dim),
                               "one embedding per attribute value")
        pair_text = self._text(options, "class_attr_text", arrays, path,
                               (len(classes), len(attrs), dim),
                               "one embedding per (class, attribute value)")
        ids = df["id"].cast(pl.Utf8) if "id" in df.columns else pl.Series(np.arange(len(y)))
        md = pl.DataFrame({"id": ids, "item": np.arange(len(y)), "y": y, "a": a, "split": split})
        return bench.spec_from_source(
            path,
            name=options.extra.get("name", self.name),
            metadata=md,
            class_names=classes,
            attr_names=attrs,
            item_kind="features",
            features=np.ascontiguousarray(x, dtype=np.float32),
            class_text_embeddings=text,
            attr_text_embeddings=attr_text,
            class_attr_text_embeddings=pair_text,
        )

    @staticmethod
    def _names(options, key, stored, prefix, values) -> list[str]:  # noqa: ANN001
        raw = options.extra.get(key)
        if raw:
            return [v.strip() for v in raw.split(",") if v.strip()]
        if stored is not None:
            return [str(v) for v in np.asarray(stored).tolist()]
        top = int(values.max()) if len(values) else 0
        return [f"{prefix} {k}" for k in range(max(top, 0) + 1)]

    @staticmethod
    def _text(options, key, arrays, path, shape, what) -> np.ndarray | None:  # noqa: ANN001
        """A text-embedding array (`key`) from --dataset-opt key=FILE.npy or the .npz."""
        source, stored = path, arrays.get(key)
        given = options.extra.get(key)
        if given:
            source = Path(given)
            try:
                stored = np.load(source, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise bench.UserError(f"--dataset-opt {key}={given}: cannot read ({exc})") from None
        if stored is None:
            return None
        text = np.asarray(stored, dtype=np.float32)
        if text.shape != shape:
            raise bench.UserError(
                f"{source}: {key} has shape {text.shape}; expected {shape} ({what}, same "
                "width as x)"
            )
        return text
