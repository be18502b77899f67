"""`zerotune.evaluate` on a run directory: base vs tuned, robustness, speed, files written."""

import json

import zerotune
from tiny import ROWS, save_tiny
from zerotune.config import build_config


def test_evaluate_run_dir_with_base_and_robustness(tmp_path):
    base = save_tiny("llama", tmp_path / "base")
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS))
    cfg = build_config({"model": {"name": str(base)}, "data": {"train": str(data), "eval_fraction": 0.0},
                        "train": {"output": str(tmp_path / "run"), "max_steps": 2, "batch_size": 2},
                        "eval": {"max_new_tokens": 8, "batch_size": 3}})
    run = zerotune.train(cfg, progress=False, compare=False)["run_dir"]
    results = zerotune.evaluate(str(run), str(data), compare_base=True, progress=False)
    tuned, base_m = results["tuned"], results["base"]
    for m in (tuned, base_m):
        assert m["n"] == len(ROWS)
        assert 0 <= m["exact_match"] <= 1 and 0 <= m["chrf"] <= 1 and m["tokens_per_second"] > 0
        assert "robustness" in m and "perturbed_score" in m
        assert m["latency_p95_s"] >= m["latency_p50_s"] > 0
    assert set(results["passed"]) == {"exact_match", "bleu4", "robustness"}
    eval_dir = run / "eval"
    assert {p.name for p in eval_dir.iterdir()} >= {"metrics.json", "samples.jsonl", "report.md", "report.html"}
    samples = [json.loads(line) for line in (eval_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == len(ROWS) and all("base_prediction" in s for s in samples)
    saved = json.loads((eval_dir / "metrics.json").read_text())
    assert saved["exact_match"] == tuned["exact_match"] and saved["base"]["n"] == len(ROWS)
    # JSON and key:value answers: scored field by field, from what the model actually wrote
    fields = saved["fields"]["tuned"]
    assert list(fields) == ["name", "order_id", "性别", "年龄", "症状"]
    assert [fields[k]["rows"] for k in fields] == [3, 3, 1, 1, 1]
    for key, entry in fields.items():
        right = 0
        for s in samples:
            ref, pred = s["expected"], s["prediction"]
            want = json.loads(ref).get(key) if ref.startswith("{") else dict(
                p.split(":", 1) for p in ref.split(";")).get(key)
            if want is None:
                continue
            try:
                got = json.loads(pred).get(key) if ref.startswith("{") else dict(
                    p.split(":", 1) for p in pred.split(";")).get(key)
            except (ValueError, AttributeError):
                got = None
            right += got == want
        assert entry["accuracy"] == right / entry["rows"], key
    assert "base" in saved["fields"] and "## Fields, tuned model" in (eval_dir / "report.md").read_text()
