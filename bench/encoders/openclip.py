"""open_clip encoders: `openclip:MODEL:PRETRAINED` → image/text features and class prompts.

PRETRAINED is an open_clip tag (downloaded once into the Hugging Face / open_clip cache),
a local checkpoint file (for machines without internet), or `none` (random weights,
seeded, so tests need no download; every result is then flagged untrained).
`spurbench-tiny` is a tiny ViT + text tower registered here so that image datasets can be
encoded in seconds on a CPU; with `none` it is what embedded image datasets default to.

Image features are open_clip's `encode_image` output (already projected into the joint
space, so the prompt head's visual projection starts as identity), L2-normalised. Class
text embeddings are prompt-ensembled: the mean of the normalised embeddings of every
template filled with the class name, renormalised. Attribute text is made the same way
from each attribute value's phrases (spec.attr_prompts, default the attribute names), and
the paired "class with attribute" prompts from spec.class_attr_format.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from bench.data.spec import DatasetSpec
from bench.encoders.base import Encoded, Encoder
from bench.errors import UserError, did_you_mean

TINY_MODEL = "spurbench-tiny"
_CONFIGS = Path(__file__).with_name("model_configs")
_INIT_SEED = 0  # random weights are seeded: `none` means the same weights in every process
log = logging.getLogger("bench.encoder")


def _open_clip():  # noqa: ANN202
    import open_clip

    if TINY_MODEL not in open_clip.list_models():
        open_clip.add_model_config(_CONFIGS)
    return open_clip


class _ImageItems(torch.utils.data.Dataset):
    """Images by path → (tensor, error); a failure is reported, not raised, so that it
    reaches the main process as one clear message even from a worker process."""

    def __init__(self, paths: list[str], transform: Any, shape: tuple[int, ...]) -> None:
        self.paths = paths
        self.transform = transform
        self.shape = shape

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        from PIL import Image

        try:
            with Image.open(self.paths[i]) as img:
                return self.transform(img.convert("RGB")), ""
        except Exception as exc:  # PIL raises many types for damaged files
            return torch.zeros(self.shape), f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def _quiet_root_logger():  # noqa: ANN202
    """open_clip logs on the root logger ('initialized randomly', which is the point of `none`;
    download failures, which the UserError raised below repeats with advice)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        root.setLevel(level)


def _checkpoint_reason(exc: BaseException) -> str:
    """Why torch/open_clip could not load a checkpoint file, in words for the user.

    torch's own messages suggest `weights_only=False`, which would run code from an
    untrusted file: never repeated. Bytes that are no checkpoint at all (garbage, a
    truncated file, text) surface as pickle, EOF, key or zip errors; a real checkpoint of
    another model as a state_dict mismatch, whose first line says what differs.
    """
    import pickle

    text = str(exc).strip()
    if "Unsupported global" in text:
        return ("it holds pickled Python objects, which are not loaded for safety; "
                "save a plain state_dict (torch.save(model.state_dict(), FILE))")
    damaged = (pickle.UnpicklingError, EOFError, KeyError, IndexError, UnicodeDecodeError)
    if isinstance(exc, damaged) or "zip archive" in text or "weights_only" in text or not text:
        return ("the file is damaged or not a PyTorch or safetensors checkpoint; "
                "download or save it again")
    if "state_dict" in text:  # the file loads, but holds another model's weights
        return f"its weights do not fit this model: {' '.join(text.split())[:240]}"
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}"


@functools.lru_cache(maxsize=8)
def _tokenizer(model: str):  # noqa: ANN202
    """open_clip rebuilds its BPE tables on every get_tokenizer call; one per model is enough."""
    return _open_clip().get_tokenizer(model)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Can the Hugging Face Hub be reached? Offline, huggingface_hub retries for ~a minute."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host or "huggingface.co", 443), timeout=timeout).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _hub_offline():  # noqa: ANN202
    """huggingface_hub's offline mode (what HF_HUB_OFFLINE=1 sets): cached files, no requests."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


class OpenClipEncoder(Encoder):
    """The image and text towers of one open_clip model, loaded lazily on first encode."""

    def __init__(
        self,
        model: str,
        pretrained: str,
        *,
        batch_size: int = 256,
        workers: int | None = None,
        device: str | torch.device | None = None,
        progress: bool = True,
    ) -> None:
        oc = _open_clip()
        self.model_name = model
        self.pretrained = pretrained
        self.id = f"openclip:{model}:{pretrained}"
        if model not in oc.list_models():
            raise UserError(
                f"--encoder {self.id}: unknown open_clip model '{model}'"
                f"{did_you_mean(model, oc.list_models())}; see open_clip.list_models()"
            )
        if batch_size < 1:
            raise UserError(f"--encode-batch-size {batch_size}: must be 1 or more")
        if workers is not None and workers < 0:
            raise UserError(f"--encode-workers {workers}: must be 0 or more")
        self.batch_size = batch_size
        self.workers = workers
        self.device = torch.device(
            device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        self.progress = progress
        self.tag_cfg: dict[str, Any] = {}
        self.checkpoint: Path | None = None
        if pretrained == "none":
            self.untrained = True
        else:
            tags = oc.list_pretrained_tags_by_model(model)
            if pretrained in tags:
                self.tag_cfg = dict(oc.get_pretrained_cfg(model, pretrained))
            elif Path(pretrained).expanduser().is_file():
                self.checkpoint = Path(pretrained).expanduser().resolve()
            else:
                if os.sep in pretrained or Path(pretrained).suffix:
                    raise UserError(f"--encoder {self.id}: checkpoint file {pretrained} not found")
                shown = ", ".join(tags[:6]) + (", ..." if len(tags) > 6 else "")
                raise UserError(
                    f"--encoder {self.id}: '{pretrained}' is not a pretrained tag of {model} "
                    f"(tags: {shown or 'none'}; see open_clip.list_pretrained()) nor a "
                    "checkpoint file; use none for random weights"
                )
        self._model: Any = None
        self._preprocess: Any = None
        self._tokenizer: Any = None

    @classmethod
    def from_id(cls, encoder_id: str, **options: Any) -> OpenClipEncoder:
        parts = encoder_id.split(":", 2)
        if len(parts) != 3 or parts[0] != "openclip" or not parts[1] or not parts[2]:
            raise UserError(
                f"--encoder {encoder_id}: expected openclip:MODEL:PRETRAINED, e.g. "
                "openclip:ViT-B-32:openai (PRETRAINED: a tag, a checkpoint file, or none)"
            )
        return cls(parts[1], parts[2], **options)

    # -- identity (the cache key) --------------------------------------------------------
    @property
    def precision(self) -> str:
        if self.device.type != "cuda":
            return "fp32"
        return "amp-bf16" if torch.cuda.is_bf16_supported() else "amp-fp16"

    def weights_identity(self) -> str:
        if self.untrained:
            return f"random-init:seed={_INIT_SEED}"
        if self.checkpoint is not None:
            st = self.checkpoint.stat()
            return f"file:{self.checkpoint}:{st.st_size}:{st.st_mtime_ns}"
        source = self.tag_cfg.get("hf_hub") or self.tag_cfg.get("url") or ""
        return f"tag:{self.pretrained}:{source}"

    def cache_identity(self) -> dict[str, object]:
        oc = _open_clip()
        preprocess = {k: self.tag_cfg.get(k) for k in ("mean", "std", "interpolation",
                                                       "resize_mode", "quick_gelu")}
        return {
            "id": f"openclip:{self.model_name}",
            "weights": self.weights_identity(),
            "model_config": oc.get_model_config(self.model_name),
            "preprocess": preprocess,
            "open_clip": oc.__version__,
            "precision": self.precision,
        }

    # -- model ---------------------------------------------------------------------------
    def _load(self) -> None:
        if self._model is not None:
            return
        oc = _open_clip()
        kwargs: dict[str, Any] = {}
        if self.tag_cfg.get("quick_gelu"):
            kwargs["force_quick_gelu"] = True  # the tag was trained with QuickGELU
        pretrained = None if self.untrained else str(self.checkpoint or self.pretrained)
        offline = bool(self.tag_cfg.get("hf_hub")) and not _hub_reachable()
        try:
            with torch.random.fork_rng(devices=[]), _quiet_root_logger(), (
                _hub_offline() if offline else contextlib.nullcontext()
            ):
                torch.manual_seed(_INIT_SEED)
                model, _, preprocess = oc.create_model_and_transforms(
                    self.model_name, pretrained=pretrained, **kwargs
                )
        except Exception as exc:
            if self.checkpoint is not None:
                raise UserError(
                    f"--encoder {self.id}: {self.checkpoint} is not a loadable checkpoint "
                    f"({_checkpoint_reason(exc)})"
                ) from None
            if not isinstance(exc, (RuntimeError, OSError, ValueError)):
                raise
            text = str(exc).strip()
            reason = text.splitlines()[0][:200] if text else type(exc).__name__
            if offline:
                reason = "the Hugging Face Hub is unreachable and they are not in its local cache"
            raise UserError(
                f"--encoder {self.id}: cannot get the '{self.pretrained}' weights of "
                f"{self.model_name} ({reason}); without internet, download the checkpoint on "
                f"another machine and pass the file: openclip:{self.model_name}:/path/to/weights"
            ) from None
        self._model = model.to(self.device).eval()
        self._preprocess = preprocess
        self._tokenizer = _tokenizer(self.model_name)

    @property
    def logit_scale(self) -> float:
        self._load()
        return float(self._model.logit_scale.detach().exp().item())

    def _autocast(self):  # noqa: ANN202
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _workers(self, n_items: int) -> int:
        if self.workers is not None:
            return self.workers
        if n_items <= 4 * self.batch_size:
            return 0  # starting worker processes costs more than a few batches
        return min(8, os.cpu_count() or 1)

    def _loader(self, dataset: Any, n: int, collate: Any = None) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            dataset, batch_size=self.batch_size, shuffle=False, num_workers=self._workers(n),
            pin_memory=self.device.type == "cuda", collate_fn=collate,
        )

    def _run(self, loader: Any, n: int, label: str, step: Any) -> np.ndarray:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        chunks: list[np.ndarray] = []
        bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                       console=Console(stderr=True), transient=True, disable=not self.progress)
        with bar, torch.no_grad(), self._autocast():
            task = bar.add_task(label, total=n)
            start = 0
            for batch in loader:
                feats = step(batch, start)
                chunks.append(F.normalize(feats.float(), dim=-1).cpu().numpy())
                start += len(chunks[-1])
                bar.advance(task, len(chunks[-1]))
        if not chunks:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)

    def _encode_images(self, spec: DatasetSpec) -> np.ndarray:
        from PIL import Image

        root = Path(spec.root or "")
        paths = [str(root / str(item)) for item in spec.metadata["item"].to_list()]
        ids = spec.metadata["id"].to_list()
        size = self._model.visual.image_size
        size = size if isinstance(size, (tuple, list)) else (size, size)
        shape = tuple(self._preprocess(Image.new("RGB", tuple(size))).shape)
        loader = self._loader(_ImageItems(paths, self._preprocess, shape), len(paths))

        def step(batch: tuple[torch.Tensor, list[str]], start: int) -> torch.Tensor:
            x, errors = batch
            for k, error in enumerate(errors):
                if error:
                    raise UserError(
                        f"dataset '{spec.name}': image {paths[start + k]} (id {ids[start + k]}) "
                        f"cannot be read: {error}"
                    )
            return self._model.encode_image(x.to(self.device, non_blocking=True))

        return self._run(loader, len(paths), f"encoding {spec.name} images", step)

    def _encode_texts(self, texts: list[str], label: str) -> np.ndarray:
        loader = self._loader(texts, len(texts), collate=self._tokenizer)

        def step(tokens: torch.Tensor, start: int) -> torch.Tensor:
            return self._model.encode_text(tokens.to(self.device, non_blocking=True))

        return self._run(loader, len(texts), label, step)

    def _ensembled(self, spec: DatasetSpec, rows: list[list[str]]) -> np.ndarray:
        """One embedding per row of phrases: every template filled with every phrase of the
        row, each embedding normalised, their mean renormalised [len(rows), D]."""
        self._load()
        for template in spec.prompt_templates:
            if "{}" not in template:
                raise UserError(
                    f"dataset '{spec.name}': prompt template {template!r} has no {{}} for the class"
                )
        out = []
        with torch.no_grad(), self._autocast():
            for phrases in rows:
                tokens = self._tokenizer([t.format(p) for p in phrases
                                          for t in spec.prompt_templates])
                emb = F.normalize(self._model.encode_text(tokens.to(self.device)).float(), dim=-1)
                out.append(F.normalize(emb.mean(dim=0), dim=0).cpu().numpy())
        return np.stack(out).astype(np.float32)

    def class_text(self, spec: DatasetSpec) -> np.ndarray:
        """Prompt-ensembled class embeddings [C, D] from spec.prompt_templates × class names."""
        return self._ensembled(spec, [[name] for name in spec.class_names])

    def attr_text(self, spec: DatasetSpec) -> np.ndarray:
        """Prompt-ensembled attribute embeddings [A, D]: the same templates filled with each
        attribute's phrases alone, as Chuang et al. 2023 embed spurious prompts ("This is a
        picture of a forest.") with no class in them."""
        return self._ensembled(spec, spec.attribute_phrases())

    def class_attr_text(self, spec: DatasetSpec) -> np.ndarray:
        """Embeddings [C, A, D] of the templates filled with "class with attribute"
        (spec.class_attr_format), Chuang et al.'s paired prompts for the calibration."""
        rows = [[spec.class_attr_format.format(cls=name, attr=p) for p in phrases]
                for name in spec.class_names for phrases in spec.attribute_phrases()]
        out = self._ensembled(spec, rows)
        return out.reshape(spec.n_classes, spec.n_attrs, -1)

    def encode(self, spec: DatasetSpec) -> Encoded:
        if spec.item_kind not in ("image", "text"):
            raise UserError(
                f"--encoder {self.id}: dataset '{spec.name}' holds {spec.item_kind}, not images "
                "or texts; use --encoder identity"
            )
        self._load()
        if spec.item_kind == "image":
            features = self._encode_images(spec)
        else:
            texts = [str(t) for t in spec.metadata["item"].to_list()]
            features = self._encode_texts(texts, f"encoding {spec.name} texts")
        return Encoded(
            features=features, class_text=self.class_text(spec), visual_projection=None,
            logit_scale=self.logit_scale, untrained=self.untrained,
            attr_text=self.attr_text(spec), class_attr_text=self.class_attr_text(spec),
        )
