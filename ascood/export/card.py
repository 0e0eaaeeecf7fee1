"""MODEL_CARD.md of a bundle, from its manifest alone: every number in it is a measured one."""

from __future__ import annotations

import json

from ascood.export.bundle import Manifest

WEAK_AUROC = 80.0  # %: below it an OOD set is named as a known limit
WEAK_FPR = 0.5  # share of an OOD set accepted as ID at the threshold above which it is named too


def _fmt(v: object) -> str:
    return f"{v:.6g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, dict | list) else str(v)


def limits(m: Manifest) -> list[str]:
    """Known limits, from the measured test metrics and what the benchmark is."""
    out = []
    src = m.source
    if src.embedded:
        out.append(f"Trained and measured on the embedded demo benchmark `{src.benchmark}` (built from small images "
                   "shipped in PyPI packages): a test bed, not evidence about real images of any domain.")
    for o in m.test.ood:
        if o.auroc < WEAK_AUROC or o.fpr_at_threshold > WEAK_FPR:
            out.append(f"Weak on `{o.ood_set}` ({o.ood_group}): AUROC {o.auroc:.1f}%, {100 * o.fpr_at_threshold:.1f}% of "
                       "its test images pass as in-distribution at the threshold.")
    if src.setting == "spurious":
        out.append("Spurious setting: the training data tie a nuisance feature (background colour) to the class; "
                   "inputs that share the nuisance but not the class (the spurious OOD set) are the hard case, and "
                   "ID images with an unusual nuisance may be flagged.")
    out.append(f"Inputs are resized to {m.preprocessing.decode_size}×{m.preprocessing.decode_size} RGB; the threshold "
               "holds for data distributed like the validation ID set, and drifts with it.")
    out.append(f"The threshold was set to accept {100 * m.threshold.target_tpr:.1f}% of ID validation images; the "
               "false-positive rates below are for the OOD sets measured here only, not for every possible input.")
    return out


def model_card(m: Manifest) -> str:
    src, sc, th, test = m.source, m.scorer, m.threshold, m.test
    kind = "embedded (built from data shipped in PyPI packages)" if src.embedded else "real (the user's data)"
    lines = [
        f"# Model card: {src.benchmark} OOD detector ({src.method}, scorer {sc.name})",
        "",
        "## What it is",
        "",
        f"A {m.model.backbone} classifier of {m.model.num_classes} classes with an out-of-distribution score; an "
        f"input whose score is below the threshold ({_fmt(th.value)}) is flagged OOD (higher score = more "
        "in-distribution).",
        "",
        "## Training data",
        "",
        f"- benchmark: `{src.benchmark}` ({src.setting} setting), {kind}",
        "- trained on its ID train split; scorer fitted on ID train; grid point and threshold chosen on ID "
        "validation (with the validation OOD halves for the grid search); every number below is on the test split",
        f"- classes: {', '.join(m.class_names)}",
        f"- run: `{src.run_id}` (epoch {src.epoch}, seed {src.seed}), chosen as {src.chosen_by}",
        f"- source: `{src.run_dir}`" + (f", sweep `{src.sweep}`" if src.sweep else ""),
        "",
        "## Method and hyperparameters",
        "",
        f"- training method: `{src.method}`; its configuration:",
        "",
        "| hyperparameter | value |",
        "|---|---|",
        *[f"| {k} | {_fmt(v)} |" for k, v in sorted(src.config.items())],
        "",
        f"- scorer: `{sc.name}`, parameters {'searched on validation (AUROC)' if sc.selection == 'val-auroc' else 'fixed'}:",
        "",
        "| scorer parameter | value |",
        "|---|---|",
        *([f"| {k} | {_fmt(v)} |" for k, v in sorted(sc.params.items())] or ["| (none) | |"]),
        "",
        f"- preprocessing: RGB, decode {m.preprocessing.decode_size}×{m.preprocessing.decode_size}, centre crop "
        f"{m.preprocessing.crop or 'none'}, mean {list(m.preprocessing.mean)}, std {list(m.preprocessing.std)}",
        "",
        "## Threshold (operating point)",
        "",
        f"- value: {_fmt(th.value)}; rule: {th.rule}",
        f"- target ID TPR {th.target_tpr:.4f}; reached on validation ID: {th.val_id_tpr:.4f} ({th.n_val_id} images)",
        f"- on test: ID TPR {test.id_tpr:.4f} ({test.n_id} images)",
        "",
        "## Test results",
        "",
        f"ID accuracy: {test.id_accuracy:.2f}% ({test.n_id} test images). FPR@95 convention: {test.fpr_convention}.",
        "",
        "| OOD set | group | images | FPR at threshold | AUROC % | FPR@95 % | AUPR-In % | AUPR-Out % |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {o.ood_set} | {o.ood_group} | {o.n} | {100 * o.fpr_at_threshold:.2f}% | {o.auroc:.2f} | {o.fpr95:.2f} | "
          f"{o.aupr_in:.2f} | {o.aupr_out:.2f} |" for o in test.ood],
        "",
        "## Intended use",
        "",
        f"Classify images like those of `{src.benchmark}` and flag inputs unlike its training distribution, to be "
        "reviewed or rejected instead of classified. Not for decisions about people, and not as the only safeguard.",
        "",
        "## Known limits",
        "",
        *[f"- {line}" for line in limits(m)],
        "",
        "## Provenance",
        "",
        f"- code version: `{src.code_version}`",
        f"- exported: {m.created}; bundle schema version {m.schema_version}",
        "",
    ]
    return "\n".join(lines)
