"""Run reports: results.json, results.md and heatmap.png."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

from diancang.evaluation import report
from diancang.evaluation.matrix import ResultMatrix
from diancang.evaluation.report import load_results, render_markdown, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def matrix() -> ResultMatrix:
    return ResultMatrix(
        step_types=[["地址", "书籍"], ["公司"], ["游戏"]],
        per_type=[
            {"地址": 0.8, "书籍": 0.6},
            {"地址": 0.6, "书籍": 0.4, "公司": 0.9},
            {"地址": 0.5, "书籍": 0.5, "公司": 0.7, "游戏": 0.8},
        ],
        micro=[0.72, 0.65, 0.60],
        macro=[0.70, 0.60, 0.625],
    )


def test_write_report_files_and_json_round_trip(tmp_path):
    m = matrix()
    paths = write_report(
        m, tmp_path / "out", title="CLUENER 演示", meta={"seed": 1, "dir": tmp_path}
    )
    assert set(paths) == {"json", "markdown", "heatmap"}
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert data["title"] == "CLUENER 演示"
    assert data["summary"]["forgetting"] == m.forgetting()
    assert ResultMatrix.from_dict(data["matrix"]) == m
    loaded, meta = load_results(paths["json"])
    assert loaded == m and meta["seed"] == 1 and meta["dir"] == str(tmp_path)
    assert paths["heatmap"].read_bytes()[:8] == PNG_MAGIC


def test_png_is_a_readable_image(tmp_path):
    from matplotlib.image import imread

    path = write_report(matrix(), tmp_path, title="t", meta={})["heatmap"]
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_markdown_tables():
    text = render_markdown(matrix(), title="Run", meta={"strategy": "finetune"})
    assert text.startswith("# Run")
    assert "- **strategy**: finetune" in text
    assert "| averaged over steps | 65.7 | 64.2 |" in text
    assert "| final step | 60.0 | 62.5 |" in text
    assert "in points): 20.0" in text
    assert "| 1 | 地址, 书籍 | 72.0 | 70.0 |" in text
    assert "| 1 | 70.0 | – | – |" in text  # task table, after step 1
    assert "| after step | 地址 | 书籍 | 公司 | 游戏 |" in text
    assert "| 3 | 50.0 | 50.0 | 70.0 | 80.0 |" in text
    assert "| 地址 | 1 | 80.0 | 50.0 | 30.0 |" in text


def test_no_cjk_font_falls_back_without_crashing(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "cjk_font", lambda: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = report.render_heatmap(matrix(), tmp_path / "h.png", title="无字体")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_empty_matrix_report(tmp_path):
    paths = write_report(ResultMatrix([["A"], ["B"]]), tmp_path, title="empty", meta={})
    data = json.loads(paths["json"].read_text(encoding="utf-8"))  # strict JSON: NaN -> null
    assert data["summary"]["averaged"]["micro"] is None
    assert paths["heatmap"].read_bytes()[:8] == PNG_MAGIC


def test_import_does_not_load_matplotlib():
    code = "import sys, diancang.evaluation.report; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
