"""A deployed OOD detector: a bundle loaded back into the network, its fitted scorer and threshold.

    detector = Detector.load("bundles/cmnist")        # device: CUDA when visible, else the CPU
    p = detector.predict(images)                      # uint8 N×3×S×S at the bundle's decode size
    p.classes, p.scores, p.ood                        # ood: score < threshold (higher score = more ID)
    result = detector.score_files(["a.png", "dir/"])  # what `ascood-score` prints

Scores are computed exactly as evaluation computes them (`ascood.evaluate`): the network runs in
fp32 on the device, its logits and features come back to the CPU, where the scorer's fitted state
lives (the scorers' device rule); input-gradient scorers (ODIN, i-ODIN, AdaSCALE) run their passes
on the device with the parameters frozen and TF32 off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from ascood.data.augment import center_crop
from ascood.data.loading import Normalizer
from ascood.evaluate import Fp32Logits, frozen, no_tf32
from ascood.export import bundle as B
from ascood.export.images import ImageInputError, batches_of, image_files
from ascood.export.state import StateError, load_state
from ascood.models import create_model
from ascood.scorers import InputScorer, Outputs, Scorer


def pick_device(device: str | torch.device | None) -> torch.device:
    """`None`: CUDA when visible, else the CPU; a named device must exist."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device: expected cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this process sees no GPU (CUDA_VISIBLE_DEVICES, driver)")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device: expected cpu, cuda or cuda:N, got {device!r}")
    return dev


class InputPipeline(nn.Module):
    """uint8 N×3×D×D at the decode size → the network's input: centre crop, (x/255 − mean)/std."""

    def __init__(self, prep: B.Preprocessing, *, channels_last: bool | None = None):
        super().__init__()
        self.crop = prep.crop
        self.normalize = Normalizer(prep.mean, prep.std, prep.channels_last if channels_last is None else channels_last)

    def forward(self, images: Tensor) -> Tensor:
        if self.crop is not None:
            images = center_crop(images, self.crop)
        return self.normalize(images)


@dataclass(frozen=True)
class Prediction:
    classes: Tensor  # int64, N: the network's predicted class
    scores: Tensor  # float32, N: higher = more in-distribution
    ood: Tensor  # bool, N: score < threshold

    def __len__(self) -> int:
        return int(self.scores.shape[0])


@dataclass
class FileScores:
    """`score_files`' answer: one row per readable image, and the files skipped with the reason."""

    table: pd.DataFrame  # file, class, class_name, score, ood
    skipped: list[tuple[str, str]] = field(default_factory=list)


class Detector:
    """Network + fitted scorer + threshold, from a bundle (`Detector.load`)."""

    def __init__(self, manifest: B.Manifest, model: nn.Module, scorer: Scorer, device: torch.device):
        self.manifest = manifest
        self.model = model.to(device).eval()
        self.scorer = scorer
        self.device = device
        self.pipeline = InputPipeline(manifest.preprocessing)
        self.std = torch.tensor(manifest.preprocessing.std, dtype=torch.float32, device=device)

    @classmethod
    def load(cls, bundle: str | Path, device: str | torch.device | None = None) -> Detector:
        """Read a bundle (manifest, safetensors weights and scorer state; nothing unpickled)."""
        bundle = Path(bundle)
        manifest = B.read_manifest(bundle)
        weights = B.read_tensors(bundle, B.WEIGHTS, manifest)
        state = B.read_tensors(bundle, B.SCORER_STATE, manifest)
        m = manifest.model
        model = create_model(m.backbone, num_classes=m.num_classes, feature_norm=m.feature_norm, sigma=m.sigma,
                             norm_at_eval=m.norm_at_eval)
        try:
            model.load_state_dict(weights)
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())[:160]
            raise B.BundleError(f"{bundle / B.WEIGHTS}: does not fit a {m.backbone} model ({detail})") from None
        if manifest.preprocessing.channels_last:
            model = model.to(memory_format=torch.channels_last)
        try:
            scorer = load_state(manifest.scorer.name, manifest.scorer.params, state, manifest.scorer.state)
        except StateError as exc:
            raise B.BundleError(f"{bundle / B.SCORER_STATE}: {exc}") from None
        return cls(manifest, model, scorer, pick_device(device))

    @property
    def threshold(self) -> float:
        return self.manifest.threshold.value

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.manifest.class_names

    def _inputs(self, images: Tensor) -> Tensor:
        d = self.manifest.preprocessing.decode_size
        if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != (3, d, d):
            raise ValueError(f"images: expected uint8 N×3×{d}×{d} (the bundle's decode size), "
                             f"got {str(images.dtype).removeprefix('torch.')} {tuple(images.shape)}")
        return self.pipeline(images.to(self.device))

    def _logits_scores(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = self._inputs(images)
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            lg, h = self.model.forward_with_features(x)
        lg, h = lg.float().cpu(), h.float().cpu()
        if isinstance(self.scorer, InputScorer):
            with frozen(self.model), no_tf32():
                scores = self.scorer.postprocess_batch(Fp32Logits(self.model), x, self.std).float().cpu()
        else:
            scores = self.scorer.postprocess(Outputs(lg, h, torch.zeros(len(lg), dtype=torch.long))).float()
        return lg, scores

    def score(self, images: Tensor) -> Tensor:
        """OOD scores of a batch of uint8 images (CPU float32; higher = more ID)."""
        return self._logits_scores(images)[1]

    def predict(self, images: Tensor) -> Prediction:
        """Predicted class, score and OOD flag (score < threshold) of a batch of uint8 images."""
        logits, scores = self._logits_scores(images)
        return Prediction(logits.argmax(dim=1), scores, scores.double() < self.threshold)

    def predict_all(self, images: Tensor, batch_size: int = 256) -> Prediction:
        parts = [self.predict(images[i : i + batch_size]) for i in range(0, max(len(images), 1), batch_size)]
        return Prediction(*(torch.cat([getattr(p, f) for p in parts]) for f in ("classes", "scores", "ood")))

    def score_files(self, paths: Sequence[str | Path], *, batch_size: int = 256) -> FileScores:
        """Every image of `paths` (files, folders searched recursively, `.txt` image lists) scored in
        batches; unreadable images are skipped and reported in `skipped`.
        Raises `ImageInputError` for a missing path, a folder without images, or when no image is readable."""
        files = image_files(paths)
        rows: list[dict] = []
        skipped: list[tuple[str, str]] = []
        for names, images, bad in batches_of(files, self.manifest.preprocessing.decode_size, batch_size):
            skipped += bad
            if not names:
                continue
            p = self.predict(images)
            for name, c, s, o in zip(names, p.classes.tolist(), p.scores.tolist(), p.ood.tolist(), strict=True):
                rows.append({"file": name, "class": c, "class_name": self.class_names[c], "score": s, "ood": o})
        if not rows:
            raise ImageInputError(f"no readable image among {len(files)} file(s) (first: {skipped[0][0]}: {skipped[0][1]})")
        return FileScores(pd.DataFrame(rows, columns=["file", "class", "class_name", "score", "ood"]), skipped)

