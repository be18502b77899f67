"""Exact match of a run's ONNX export, decoded freely and kept to the answer grammar the export carries.

    .venv/bin/python benchmarks/export_quality.py RUN_DIR --data examples/support_en/eval.jsonl [--limit 40]
        [--precision fp32|int4]

Exports the run (`zerotune export RUN_DIR --format onnx`), then answers the eval rows with ONNX Runtime
GenAI, greedy, one row at a time, three ways: freely; with the export's answer.lark (fits any question:
labels, keys and number fields kept); and with the per-question grammar (zerotune.export.grammar.lark:
copies also kept to spans of the question). Prints exact match and new tokens/s for each, beside what
`zerotune eval` (PyTorch, schema decoding) reports for the same rows. Nothing here asserts a number.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("--data", required=True)
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "int4"])
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from zerotune.evaluate.metrics import exact_match
    from zerotune.evaluate.run import load_rows
    from zerotune.export import export
    from zerotune.export.grammar import lark
    from zerotune.export.onnx import generate_ids, load_onnx, stop_ids
    from zerotune.models.inference import load_run, run_schema
    from zerotune.models.templates import prompt_text

    run = Path(args.run)
    schema = run_schema(run)
    if schema is None:
        raise SystemExit(f"{run}: the run's answers have no schema; nothing to compare")
    loaded = load_run(run)  # the run's chat format and system prompt, as eval renders them
    rows = load_rows(args.data, limit=args.limit)
    texts = [prompt_text(loaded.tokenizer, loaded.fmt, r["messages"][:-1]) for r in rows]
    questions = [r["messages"][-2]["content"] for r in rows]
    refs = [r["messages"][-1]["content"] for r in rows]
    del loaded
    out = export(str(run), "onnx", precision=args.precision)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    model, stops = load_onnx(out), stop_ids(out)
    generate_ids(model, prompts[:1], 4, stops)  # warm-up
    static = (out / "answer.lark").read_text(encoding="utf-8")
    ways = {"free": None, "answer.lark (any question)": [static] * len(rows),
            "per-question grammar": [lark(schema, q) for q in questions]}
    print(f"{run} exported to ONNX {args.precision}; {len(rows)} rows of {args.data}")
    for name, grammars in ways.items():
        start = time.perf_counter()
        ids = generate_ids(model, prompts, args.max_new_tokens, stops, grammars=grammars)
        seconds = time.perf_counter() - start
        preds = [tokenizer.decode(i, skip_special_tokens=True).strip() for i in ids]
        print(f"  {name:<28} exact match {exact_match(preds, refs):.3f}   "
              f"{sum(map(len, ids)) / seconds:5.1f} new tokens/s")


if __name__ == "__main__":
    main()
