"""The evaluation report: files written, values shown, plots embedded, diffs escaped."""

import json
import re

import pytest

from zerotune.evaluate.report import diff_html, diff_text, thresholds_check, worst_samples, write_report

THRESHOLDS = {"exact_match": 0.85, "bleu4": 0.32, "robustness": 0.8}
RESULTS = {
    "tuned": {"exact_match": 0.9, "exact_match_normalized": 0.92, "bleu4": 0.25, "rouge_l": 0.61, "chrf": 0.7,
              "robustness": 0.95, "perturbed_score": 0.5, "tokens_per_second": 123.45,
              "latency_p50_s": 0.1234, "latency_p95_s": 0.5, "n": 20},
    "base": {"exact_match": 0.1, "bleu4": 0.05, "rouge_l": 0.2, "chrf": 0.3, "robustness": 0.5,
             "perturbed_score": 0.7, "n": 20},
}
SAMPLES = [
    {"input": "q1", "expected": "Paris", "prediction": "Paris", "exact": True},
    {"input": "q2", "expected": "<b>bold</b> & co", "prediction": "<script>alert(1)</script> & co",
     "base_prediction": "no idea", "exact": False},
    {"input": "q3", "expected": "the cat sat", "prediction": "the cat sat down", "exact": False},
]


def test_thresholds_check_relative_robustness_with_base():
    checks = thresholds_check(RESULTS["tuned"], THRESHOLDS, base=RESULTS["base"])
    # 0.5 < 0.8 * 0.7 = 0.56: the tuned model is more fragile than the base, even with ratio 0.95
    assert checks == {"exact_match": True, "bleu4": False, "robustness": False}


def test_thresholds_check_ratio_without_base_and_unmeasured_left_out():
    assert thresholds_check({"exact_match": 0.85, "robustness": 0.8}, THRESHOLDS) == {
        "exact_match": True, "robustness": True}


def test_worst_samples_skips_exact_and_sorts_by_chrf():
    worst = worst_samples(SAMPLES, 10)
    assert [s["input"] for s, _ in worst] == ["q2", "q3"]
    assert worst[0][1] < worst[1][1]
    assert len(worst_samples(SAMPLES, 1)) == 1


def test_diff_escapes_html_and_marks_changes():
    out = diff_html("a <b> c", "a <i> c")
    assert "<del>&lt;b&gt;</del>" in out or "<del>b</del>" in out
    assert "<b>" not in out and "<i>" not in out
    assert diff_text("the cat sat", "the cat sat down") == "the cat sat{+ down+}"
    assert diff_text("今天天气很好", "今天天气不错") == "今天天气[-很好-]{+不错+}"


@pytest.fixture
def report_dir(tmp_path):
    log = tmp_path / "metrics.jsonl"
    rows = [{"step": i, "loss": 2.0 / i} for i in range(1, 6)] + [{"step": 5, "eval_loss": 0.5}]
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n{half a line", encoding="utf-8")
    write_report(tmp_path, RESULTS, samples=SAMPLES, thresholds=THRESHOLDS, metrics_jsonl=log,
                 config_yaml="model:\n  name: tiny <model>\n", worst_n=10)
    return tmp_path / "eval"


def test_report_files_written(report_dir):
    for name in ("report.md", "report.html", "loss_curve.png", "metrics.png"):
        assert (report_dir / name).stat().st_size > 0


def test_html_is_self_contained_with_values_and_images(report_dir):
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,[A-Za-z0-9+/=]+"', page)) == 2
    for value in ("0.9000", "0.2500", "0.1000", "123.5", "0.123", ">20<"):
        assert value in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "tiny &lt;model&gt;" in page
    assert "src=\"loss_curve.png\"" not in page


def test_markdown_has_threshold_verdicts_and_samples(report_dir):
    md = (report_dir / "report.md").read_text(encoding="utf-8")
    assert "| exact_match | 0.1000 | 0.9000 | ≥ 0.85 | PASS |" in md
    assert "| bleu4 | 0.0500 | 0.2500 | ≥ 0.32 | FAIL |" in md
    assert "| robustness | 0.5000 | 0.9500 | ≥ 0.80 × base perturbed | FAIL |" in md
    assert "Thresholds: FAIL (1/3 met)" in md
    assert "![Training loss](loss_curve.png)" in md
    assert "{+ down+}" in md and "no idea" in md
    assert "name: tiny <model>" in md


def test_report_without_base_log_or_config(tmp_path):
    write_report(tmp_path, {"tuned": {"exact_match": 1.0, "n": 1}}, samples=SAMPLES[:1],
                 thresholds=THRESHOLDS, metrics_jsonl=tmp_path / "missing.jsonl", config_yaml=None)
    md = (tmp_path / "eval" / "report.md").read_text(encoding="utf-8")
    assert "| metric | tuned | threshold | result |" in md
    assert "Thresholds: PASS (1/1 met)" in md
    assert "Training loss" not in md and "## Config" not in md
