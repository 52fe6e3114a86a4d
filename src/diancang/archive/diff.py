"""What changed between two archived versions: types, metric deltas and config keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diancang.archive.store import Version


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (empty dicts kept as values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def delta(a: Any, b: Any) -> float | None:
    """``b - a`` rounded, or None unless both are numbers."""
    if isinstance(a, int | float) and isinstance(b, int | float):
        return round(float(b) - float(a), 6)
    return None


def version_diff(va: Version, vb: Version) -> dict[str, Any]:
    """What changed from version ``va`` to ``vb``: types, metric deltas (b - a), config."""
    pa, pb = va.metrics.get("per_type") or {}, vb.metrics.get("per_type") or {}
    common = [t for t in vb.types if t in va.types]
    ca, cb = flatten(va.config), flatten(vb.config)
    config: dict[str, dict[str, Any]] = {}
    for key in sorted(ca.keys() | cb.keys()):
        if ca.get(key, ...) != cb.get(key, ...):
            config[key] = {side: c[key] for side, c in (("a", ca), ("b", cb)) if key in c}
    return {
        "a": va.id,
        "b": vb.id,
        "types_added": [t for t in vb.types if t not in va.types],
        "types_removed": [t for t in va.types if t not in vb.types],
        "per_type": {t: delta(pa.get(t), pb.get(t)) for t in common},
        "micro": delta(va.metrics.get("micro"), vb.metrics.get("micro")),
        "macro": delta(va.metrics.get("macro"), vb.metrics.get("macro")),
        "config": config,
    }
