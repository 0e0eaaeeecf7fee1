"""The whole detector as one ONNX graph: uint8 images in; logits, features, class, score and OOD flag out.

The graph is the bundle's own modules traced by `torch.onnx.export` (the dynamo exporter): the
input pipeline (centre crop, normalization), the network in fp32, the scorer's `postprocess` with
its fitted state as constants (KNN's bank, MDS's means and precision, …), and `score < threshold`.
Bank scores are traced in one block (`functional.unchunked`): their query chunks would fix the
batch size into the graph. The batch dimension stays dynamic.

Every scorer that is a tensor function of one forward pass can go; scorers that need an input
gradient (ODIN, i-ODIN, AdaSCALE) cannot, and are refused with that reason.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ascood.detector import InputPipeline
from ascood.export.bundle import Manifest
from ascood.scorers import Outputs, Scorer
from ascood.scorers import functional as Fs

INPUT = "images"
OUTPUTS = ("logits", "features", "class", "score", "ood")
OPSET = 20
INLINE_LIMIT = 1 << 30  # bytes of weights and scorer state kept inside detector.onnx (protobuf's limit is 2 GiB)


def onnx_refusal(cls: type[Scorer]) -> str | None:
    """Why a scorer cannot be one graph (None when it can)."""
    if cls.needs_input:
        return (f"scorer {cls.name} needs an input gradient (a backward pass through the network per input), "
                "which an ONNX inference graph does not compute; choose a scorer of one forward pass "
                "(msp, maxlogit, energy, gen, react, ash, scale, mds, knn, …)")
    return None


class DetectorGraph(nn.Module):
    """What the ONNX graph computes, in PyTorch (on the CPU, fp32)."""

    def __init__(self, manifest: Manifest, model: nn.Module, scorer: Scorer):
        super().__init__()
        self.pipeline = InputPipeline(manifest.preprocessing, channels_last=False)
        self.model = model
        self.scorer = scorer
        self.threshold = float(manifest.threshold.value)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        logits, h = self.model.forward_with_features(self.pipeline(images))
        labels = torch.zeros_like(logits[:, 0], dtype=torch.long)
        score = self.scorer.postprocess(Outputs(logits, h, labels)).float()
        return logits, h, logits.argmax(dim=1), score, score < self.threshold


def export_onnx(manifest: Manifest, model: nn.Module, scorer: Scorer, path: Path) -> None:
    """Trace the detector into `path` and check the model with `onnx.checker`."""
    import onnx

    reason = onnx_refusal(type(scorer))
    if reason:
        raise ValueError(reason)
    graph = DetectorGraph(manifest, _cpu_copy(model), scorer).eval()
    d = manifest.preprocessing.decode_size
    example = torch.randint(0, 256, (2, 3, d, d), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1)
    size = sum(t.numel() * t.element_size() for t in [*graph.state_dict().values(), *_tensors(scorer)])
    quiet = io.StringIO()
    with Fs.unchunked(), torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (example,), str(path), input_names=[INPUT], output_names=list(OUTPUTS),
                          dynamic_shapes=({0: batch},), opset_version=OPSET, dynamo=True, verbose=False,
                          external_data=size > INLINE_LIMIT)
    onnx.checker.check_model(str(path), full_check=True)


def _tensors(scorer: Scorer) -> list[Tensor]:
    from ascood.export.state import dump_state

    return list(dump_state(scorer)[0].values())


def _cpu_copy(model: nn.Module) -> nn.Module:
    """The network on the CPU in the standard memory format (the live model is left as it is)."""
    import copy

    return copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).float().eval()


def run_onnx(path: str | Path, images: Tensor | np.ndarray) -> dict[str, np.ndarray]:
    """The graph's outputs by name for a uint8 N×3×D×D batch, with ONNX Runtime on the CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = images.numpy() if isinstance(images, Tensor) else np.asarray(images)
    return dict(zip(OUTPUTS, session.run(list(OUTPUTS), {INPUT: x}), strict=True))
