"""The bundle directory: what a detector in production needs, readable without pickle.

    BUNDLE/manifest.json            schema version, source run, model, preprocessing, class names,
                                    scorer (name, parameters, fitted-state layout), threshold, test metrics
    BUNDLE/weights.safetensors      the network's state dict
    BUNDLE/scorer_state.safetensors the scorer's fitted tensors (KNN bank, class means, …; may be empty)
    BUNDLE/MODEL_CARD.md            the model card
    BUNDLE/detector.onnx            optional: network + scorer + threshold as one graph

A bundle is written into a temporary sibling directory and renamed into place, so a failed export
leaves nothing behind and a reader never sees half a bundle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
SCORER_STATE = "scorer_state.safetensors"
MODEL_CARD = "MODEL_CARD.md"
ONNX = "detector.onnx"


class BundleError(ValueError):
    """A bundle that cannot be read or written (missing file, other schema version, bad field); one line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    backbone: str
    num_classes: int = Field(ge=1)
    feature_norm: str
    sigma: float
    norm_at_eval: bool


class Preprocessing(_Strict):
    """uint8 RGB at decode_size (shorter side resized, centre square), centre crop, (x/255 − mean)/std."""

    decode_size: int = Field(ge=1)
    crop: int | None = None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels_last: bool = False

    @property
    def input_size(self) -> int:
        return self.crop or self.decode_size


class ScorerSpec(_Strict):
    name: str
    params: dict[str, Any]
    selection: str  # "val-auroc": its grid searched on validation; "fixed": the parameters as given
    state: dict[str, Any]  # layout of the fitted attributes (ascood.export.state)
    needs_input: bool


class Threshold(_Strict):
    value: float
    target_tpr: float
    val_id_tpr: float
    n_val_id: int
    rule: str


class OODSetReport(_Strict):
    ood_set: str
    ood_group: str
    n: int
    fpr_at_threshold: float  # share of the set's test images accepted as ID at the threshold
    auroc: float
    fpr95: float
    aupr_in: float
    aupr_out: float


class TestReport(_Strict):
    id_accuracy: float  # %
    n_id: int
    id_tpr: float  # share of ID test images accepted at the threshold
    fpr_convention: str
    ood: tuple[OODSetReport, ...]


class Source(_Strict):
    run_dir: str
    run_id: str
    benchmark: str
    setting: str
    embedded: bool
    method: str
    epoch: int
    seed: int
    config: dict[str, Any]
    code_version: str
    chosen_by: str  # how this run was chosen (a run directory given, the report's pick, the best final run)
    sweep: str | None = None


class Manifest(_Strict):
    schema_version: int
    created: str
    source: Source
    model: ModelSpec
    preprocessing: Preprocessing
    class_names: tuple[str, ...]
    scorer: ScorerSpec
    threshold: Threshold
    test: TestReport
    onnx: str | None = None
    files: dict[str, str] = Field(default_factory=dict)  # file name → sha256


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def staging(dest: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """A temporary directory next to `dest`, renamed to `dest` when the block succeeds and removed
    when it fails. An existing `dest` is refused unless `overwrite`; then it is replaced only once
    the new bundle is complete."""
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise BundleError(f"--out {dest}: already exists; choose another path or pass --overwrite")
    if dest.exists() and not (dest / MANIFEST).is_file():
        raise BundleError(f"--out {dest}: exists and is not a bundle; refusing to replace it")
    parent = dest.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BundleError(f"--out {dest}: cannot create {parent} ({exc.strerror})") from None
    tmp = parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if dest.exists():
            old = parent / f".{dest.name}.old-{os.getpid()}"
            dest.rename(old)
            tmp.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_tensors(path: Path, tensors: dict[str, Tensor]) -> None:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"schema_version": str(SCHEMA_VERSION)})


def write_manifest(directory: Path, manifest: Manifest) -> Manifest:
    """The manifest with the sha256 of every other file of the directory, written last."""
    files = {p.name: sha256(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest = manifest.model_copy(update={"files": files})
    (directory / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


def read_manifest(bundle: Path) -> Manifest:
    """The validated manifest; one line naming the bundle and what is wrong."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: not a bundle directory (expected a directory with {MANIFEST})")
    if not path.is_file():
        raise BundleError(f"{bundle}: no {MANIFEST} (not an ascood-export bundle)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({type(exc).__name__})") from None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != SCHEMA_VERSION:
        raise BundleError(f"{path}: bundle schema version {version!r}; this ascood reads version {SCHEMA_VERSION} "
                          "(export the run again with this version)")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "manifest"
        raise BundleError(f"{path}: {where}: {err['msg']}") from None


def read_tensors(bundle: Path, name: str, manifest: Manifest) -> dict[str, Tensor]:
    """A safetensors file of the bundle, checked against the manifest's hash (no pickle involved)."""
    path = Path(bundle) / name
    if not path.is_file():
        raise BundleError(f"{bundle}: no {name}")
    if manifest.files.get(name) != sha256(path):
        raise BundleError(f"{path}: does not match the manifest's sha256 (modified or from another bundle)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise BundleError(f"{path}: not a readable safetensors file ({exc})") from None
