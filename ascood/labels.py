"""Names and number formats shared by the HTML report (`analysis.report`) and the Rich summary
(`ascood.sweep.summary`), so a metric, a setting or an interval reads the same in both."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

MINUS = "\u2212"
DASH = "\u2013"
PCT_DIGITS = 1  # test metrics and ID accuracy, in %
VAL_DIGITS = 2  # the validation objective that chose a setting
GAIN_DIGITS = 2  # normalized gains, regrets (fractions of CE's headroom)

METRIC_NAMES = {
    "auroc": "AUROC", "fpr95": "FPR@95", "aupr_in": "AUPR-in", "aupr_out": "AUPR-out", "id_accuracy": "ID acc.",
}
PARAM_NAMES = {
    "alpha_max": "α", "alpha": "α", "alpha_min": "α_min", "p_inv": "p_inv", "lam": "λ", "lambda": "λ",
    "sigma": "σ", "ood_type": "OOD type", "lr": "lr", "alpha_scale": "α scale",
}


def metric_name(key: str, split: str | None = None) -> str:
    """'auroc', 'test' → 'test AUROC'; an unknown key is returned as it is."""
    name = METRIC_NAMES.get(key, key)
    return f"{split} {name}" if split else name


def param_name(key: str) -> str:
    return PARAM_NAMES.get(key, key)


def _finite(v: object) -> bool:
    try:
        return math.isfinite(float(v))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def number(v: float, digits: int = PCT_DIGITS, *, sign: bool = False) -> str:
    """Fixed-point with a typographic minus; an en dash where there is no number."""
    if not _finite(v):
        return DASH
    text = f"{float(v):+.{digits}f}" if sign else f"{float(v):.{digits}f}"
    if text.lstrip("+-").strip("0.") == "":  # a value that rounds to zero carries no sign
        return text.lstrip("+-")
    return text.replace("-", MINUS)


def pm(mean: float, std: float, digits: int = PCT_DIGITS) -> str:
    """'86.7 ± 11.8' (std omitted where it is undefined)."""
    if not _finite(std):
        return number(mean, digits)
    return f"{number(mean, digits)} ± {number(std, digits)}"


def interval(point: float, low: float, high: float, digits: int = PCT_DIGITS, *, sign: bool = True) -> str:
    """'+1.2 [−0.3, +2.7]'; '+1.2 (one seed)' without bounds; an en dash without a point."""
    if not _finite(point):
        return DASH
    if not (_finite(low) and _finite(high)):
        return f"{number(point, digits, sign=sign)} (one seed)"
    return f"{number(point, digits, sign=sign)} [{number(low, digits, sign=sign)}, {number(high, digits, sign=sign)}]"


def short_labels(settings: Iterable[str], *, fixed: Mapping[str, str] | None = None,
                 prefix: str = "S") -> dict[str, str]:
    """setting → S1, S2, … in order of first appearance; `fixed` names some settings outright (CE).
    The same sequence always gives the same labels, and no two settings share one."""
    fixed = dict(fixed or {})
    out: dict[str, str] = {}
    n = 0
    for s in settings:
        if s in out:
            continue
        if s in fixed:
            out[s] = fixed[s]
            continue
        n += 1
        while f"{prefix}{n}" in fixed.values():
            n += 1
        out[s] = f"{prefix}{n}"
    return out


def setting_fields(setting: str) -> dict[str, str]:
    """'alpha_max=1 p_inv=0.1 …' (`ascood.verdict.setting_id`) → {'alpha_max': '1', …}; {} for a
    name that is no such string (the CE baseline)."""
    pairs = [p.partition("=") for p in setting.split(" ")]
    if not pairs or any(not eq or not k for k, eq, _ in pairs):
        return {}
    return {k: v for k, _, v in pairs}


def _short(v: object) -> str:
    if isinstance(v, float) or (isinstance(v, str) and _finite(v)):
        return f"{float(v):.4g}".replace("-", MINUS)
    return str(v)


def compact_setting(params: Mapping[str, object]) -> str:
    """One line naming a setting: α, p_inv, λ, σ and lr always; α_min, the α scale and the
    synthesis kind only where they depart from the released defaults (α_min = α, absolute,
    gradient). E.g. 'α=0.3 p_inv=0.1 λ=1 σ=0.5 lr=0.05'."""
    parts = [f"{param_name(k)}={_short(params[k])}" for k in ("alpha_max", "p_inv", "lam", "sigma", "lr") if k in params]
    if "alpha_min" in params and _short(params["alpha_min"]) != _short(params.get("alpha_max")):
        parts.insert(1, f"α_min={_short(params['alpha_min'])}")
    if str(params.get("alpha_scale", "absolute")) != "absolute":
        parts.append(f"{params['alpha_scale']} α")
    if str(params.get("ood_type", "gradient")) != "gradient":
        parts.append(str(params["ood_type"]))
    return " ".join(parts)
