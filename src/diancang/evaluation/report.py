"""Run reports: ``results.json``, a Markdown summary and a step x type F1 heatmap (PNG).

Steps are numbered from 1 in the Markdown and the heatmap (``step_types[0]`` is step 1); F1 is
shown in percent with one decimal, forgetting in F1 points.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diancang.errors import DataError
from diancang.evaluation.matrix import LEARNED_FLOOR, ResultMatrix

logger = logging.getLogger("diancang.report")

CJK_FONT_NAMES = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans SC",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Sarasa Gothic SC",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
    "Heiti SC",
    "AR PL UMing CN",
    "Droid Sans Fallback",
)
_CJK_FILE_HINTS = (
    "notosanscjk",
    "notoserifcjk",
    "notosanssc",
    "sourcehansans",
    "wqy",
    "simhei",
    "msyh",
    "uming",
    "droidsansfallback",
)


def _pct(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table: the header row, the separator, then the rows (``|`` in cells escaped)."""
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _json_safe(value: Any) -> Any:
    """NaN -> None (strict JSON), recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def render_markdown(matrix: ResultMatrix, *, title: str, meta: dict[str, Any] | None = None) -> str:
    """The Markdown summary: per-step micro/macro, step x task and step x type F1, forgetting."""
    lines = [f"# {title}", ""]
    meta = dict(meta or {})
    audits = meta.pop("supervision_audit", None) or []
    for key, value in meta.items():
        lines.append(f"- **{key}**: {value}")
    if meta:
        lines.append("")
    avg, fin = matrix.averaged(), matrix.final()
    lines += [
        "## Summary",
        "",
        f"Steps completed: {matrix.n_steps} of {len(matrix.step_types)}. "
        "F1 in percent (strict entity-level).",
        "",
        *markdown_table(
            ["", "micro F1", "macro F1"],
            [
                ["averaged over steps", _pct(avg["micro"]), _pct(avg["macro"])],
                ["final step", _pct(fin["micro"]), _pct(fin["macro"])],
            ],
        ),
        "",
        f"Forgetting (mean over learned old types of F1 right after their step minus final "
        f"F1, in points): {_pct(matrix.forgetting())}. {_never_learned(matrix)}",
        "",
        "## Per step",
        "",
        *markdown_table(
            ["step", "new types", "micro F1", "macro F1"],
            [
                [str(s + 1), ", ".join(matrix.step_types[s]), _pct(mi), _pct(ma)]
                for s, (mi, ma) in enumerate(zip(matrix.micro, matrix.macro, strict=True))
            ],
        ),
        "",
    ]
    tasks = matrix.task_matrix()
    lines += [
        "## F1 per task (rows: after step; columns: task = types of that step)",
        "",
        *markdown_table(
            ["after step"]
            + [f"{j + 1} ({', '.join(ts)})" for j, ts in enumerate(matrix.step_types)],
            [[str(s + 1)] + [_pct(v) for v in row] for s, row in enumerate(tasks.tolist())],
        ),
        "",
    ]
    types = matrix.type_matrix()
    lines += [
        "## F1 per type (rows: after step)",
        "",
        *markdown_table(
            ["after step", *matrix.all_types],
            [[str(s + 1)] + [_pct(v) for v in row] for s, row in enumerate(types.tolist())],
        ),
        "",
    ]
    lines += audit_lines(audits)
    per = matrix.forgetting_per_type()
    if per:
        intro, last = matrix.introduced_at(), matrix.n_steps - 1
        lines += [
            "## Forgetting per old type",
            "",
            *markdown_table(
                ["type", "step", "F1 after its step", "final F1", "forgetting"],
                [
                    [
                        t,
                        str(intro[t] + 1),
                        _pct(matrix.per_type[intro[t]][t]),
                        _pct(matrix.per_type[last][t]),
                        _pct(f),
                    ]
                    for t, f in per.items()
                ],
            ),
            "",
        ]
    return "\n".join(lines)


def audit_lines(audits: list[dict[str, Any] | None]) -> list[str]:
    """The supervision audit per step (see ``diancang.learn.audit``) as a table."""
    rows = [
        [
            str(k + 1),
            str(a["unlabelled_words"]),
            str(a["hidden_old_entity_words"]),
            str(a["pseudo_labelled_words"]),
            _pct(a["precision"]),
            _pct(a["recall"]),
            str(a["left_out"]),
        ]
        for k, a in enumerate(audits)
        if a
    ]
    if not rows:
        return []
    return [
        "## What each step trained its unlabelled words as (hidden gold, measurement only)",
        "",
        "Words the step's data leaves `O`; pseudo-labelled: trained as an old type (relabelled "
        "or pseudo-labelled); precision and recall of those against the hidden gold old "
        "types, in percent; left out: not in the base loss.",
        "",
        *markdown_table(
            [
                "step",
                "unlabelled words",
                "hidden old-type words",
                "pseudo-labelled",
                "precision",
                "recall",
                "left out",
            ],
            rows,
        ),
        "",
    ]


@functools.lru_cache(maxsize=1)
def cjk_font() -> str | None:
    """The family name of an installed CJK font known to matplotlib, or None if there is none."""
    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist}
    for name in CJK_FONT_NAMES:
        if name in names:
            return name
    # Fonts installed after matplotlib built its cache are not in ttflist: look for their files.
    for path in sorted(font_manager.findSystemFonts()):
        base = os.path.basename(path).lower().replace("-", "").replace("_", "")
        if any(h in base for h in _CJK_FILE_HINTS):
            try:
                font_manager.fontManager.addfont(path)
                return str(font_manager.FontProperties(fname=path).get_name())
            except (OSError, RuntimeError, ValueError):
                continue
    return None


def render_heatmap(matrix: ResultMatrix, path: str | Path, *, title: str) -> Path:
    """Write a step x type F1 heatmap PNG (percent, annotated; unseen cells blank)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    types = matrix.all_types
    data = matrix.type_matrix() * 100.0
    n_rows, n_cols = data.shape
    labels = [*types, title]
    font = cjk_font() if any(not s.isascii() for s in labels) else None
    if font is None and any(not s.isascii() for s in labels):
        logger.warning(
            "no CJK font found: Chinese type names in %s may show as boxes "
            "(install one, e.g. Debian package fonts-noto-cjk)",
            path,
        )
    fonts = (
        matplotlib.rc_context(
            {"font.family": "sans-serif", "font.sans-serif": [font, "DejaVu Sans"]}
        )
        if font
        else contextlib.nullcontext()
    )
    with fonts, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*[Gg]lyph .* missing from")
        fig = Figure(figsize=(max(4.5, 0.8 * n_cols + 2.5), max(2.5, 0.5 * n_rows + 1.8)))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        if n_rows == 0 or n_cols == 0:
            ax.text(0.5, 0.5, "no completed step", ha="center", va="center")
            ax.set_axis_off()
        else:
            cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
            image = ax.imshow(
                np.ma.masked_invalid(data), cmap=cmap, vmin=0, vmax=100, aspect="auto"
            )
            for s in range(n_rows):
                for j in range(n_cols):
                    v = data[s, j]
                    if not math.isnan(v):
                        color = "white" if v < 60 else "black"
                        ax.text(j, s, f"{v:.1f}", ha="center", va="center", color=color, fontsize=8)
            ax.set_xticks(
                range(n_cols),
                types,
                rotation=45 if n_cols > 4 else 0,
                ha="right" if n_cols > 4 else "center",
            )
            ax.set_yticks(range(n_rows), [f"step {s + 1}" for s in range(n_rows)])
            ax.set_xlabel("entity type")
            ax.set_ylabel("after step")
            fig.colorbar(image, ax=ax, label="F1 (%)")
        ax.set_title(title)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def write_report(
    matrix: ResultMatrix, out_dir: str | Path, *, title: str, meta: dict[str, Any]
) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``heatmap.png`` into ``out_dir``.

    Returns their paths under the keys ``json``, ``markdown`` and ``heatmap``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "results.json",
        "markdown": out / "results.md",
        "heatmap": out / "heatmap.png",
    }
    record = {
        "title": title,
        "meta": meta,
        "summary": matrix.summary(),
        "matrix": matrix.to_dict(),
    }
    text = json.dumps(_json_safe(record), ensure_ascii=False, indent=2, default=str)
    paths["json"].write_text(text + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_markdown(matrix, title=title, meta=meta), encoding="utf-8")
    render_heatmap(matrix, paths["heatmap"], title=title)
    return paths


def load_results(path: str | Path) -> tuple[ResultMatrix, dict[str, Any]]:
    """Read a ``results.json`` written by :func:`write_report`: the matrix and the meta dict."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(
            f"cannot read results: {err}", path=path, fix="give a results.json of a diancang run"
        ) from None
    if not isinstance(data, dict) or "matrix" not in data:
        raise DataError(
            "no 'matrix' in this file", path=path, fix="give a results.json of a diancang run"
        )
    meta = data.get("meta") or {}
    return ResultMatrix.from_dict(data["matrix"], source=str(path)), meta


def _never_learned(matrix: ResultMatrix) -> str:
    """One sentence naming the types that never reached the learned floor."""
    floor = _pct(LEARNED_FLOOR)
    never = matrix.never_learned()
    if not never:
        return f"Every type reached {floor} F1 right after its step (learned)."
    return (
        f"Never learned (below {floor} F1 right after their step; left out of forgetting): "
        f"{', '.join(never)}."
    )


def render_side_by_side(arms: dict[str, ResultMatrix]) -> str:
    """The step x type F1 tables of several runs of one stream in one Markdown table: each cell
    reads ``a / b / ...`` in the order of ``arms``; then the final F1 and the forgetting of each
    type (F1 right after its step minus final F1)."""
    names = list(arms)
    first = arms[names[0]]
    types = first.all_types
    header = ["after step", *[f"{t} ({' / '.join(names)})" for t in types]]
    rows = []
    for k in range(first.n_steps):
        cells = []
        for t in types:
            values = [arms[n].per_type[k].get(t) if k < arms[n].n_steps else None for n in names]
            cells.append("–" if values[0] is None else " / ".join(_pct(v) for v in values))
        rows.append([str(k + 1), *cells])
    forgetting = [arms[n].forgetting_per_type() for n in names]
    rows.append(
        [
            "forgetting",
            *[
                " / ".join(_pct(f.get(t, math.nan)) for f in forgetting)
                if t in forgetting[0]
                else "–"
                for t in types
            ],
        ]
    )
    lines = markdown_table(header, rows)
    lines.append("")
    for n in names:
        m = arms[n]
        lines.append(
            f"- **{n}**: final macro F1 {_pct(m.final()['macro'])}, micro "
            f"{_pct(m.final()['micro'])}; mean forgetting {_pct(m.forgetting())} points; "
            f"never learned: {', '.join(m.never_learned()) or 'none'}"
        )
    return "\n".join(lines) + "\n"
