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
