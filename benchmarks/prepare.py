"""Throughput and peak memory of `zerotune prepare` on a large generated JSONL file.

    python benchmarks/prepare.py                 # 1,000,000 rows (~300 MB), validate + clean + exact dedup
    python benchmarks/prepare.py --rows 200000 --pii flag --dedup near

The file is written to a temporary folder and removed afterwards. About 5% of rows are exact
duplicates, some carry HTML, full-width characters, trailing spaces or PII, so every rule has work.
Peak memory is the process's maximum resident set size (the generator streams, so it is prepare's).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zerotune.config import CleanConfig, PrepareConfig  # noqa: E402
from zerotune.data.prepare import prepare  # noqa: E402

ZH = ["患者发热三天，伴有咳嗽和乏力，", "请问如何申请退货？订单号在哪里查看？", "这款手机的电池续航怎么样，",
      "合同第三条约定的违约金是否过高，", "孩子最近食欲不振，晚上睡不好，"]
EN = ["How do I reset my password after the account was locked? ",
      "Explain the difference between a list and a tuple. ",
      "Summarise the quarterly report in three bullet points. ", "What is the capital of Australia and why? "]
ANSWERS = ["建议多饮水、注意休息，如持续高热请及时就医。", "<p>You can reset it from the <b>Settings</b> page.</p>",
           '```json\n{"status": "ok", "items": [1, 2, 3]}\n```', "Ｔｈｅ answer is Canberra; it was a compromise.  \n",
           "请联系客服 service@example.com 或拨打 13812345678。"]
CATEGORIES = ["医疗", "售后", "编程", "常识"]


def make_row(rng: random.Random, i: int) -> dict:
    """One io row of roughly 300 bytes; the index keeps rows distinct unless duplicated on purpose."""
    question = rng.choice(ZH) + rng.choice(EN) + f"(case {i})"
    answer = rng.choice(ANSWERS) + " " + rng.choice(EN) + rng.choice(ZH)
    return {"input": question, "output": answer, "category": rng.choice(CATEGORIES)}


def generate(path: Path, rows: int, seed: int = 0) -> int:
    """Write `rows` JSONL rows, about 5% exact duplicates of earlier ones; return the file size."""
    rng = random.Random(seed)
    recent: list[str] = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            if recent and rng.random() < 0.05:
                line = rng.choice(recent)
            else:
                line = json.dumps(make_row(rng, i), ensure_ascii=False)
                recent = (recent + [line])[-1000:]
            f.write(line + "\n")
    return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dedup", choices=["none", "exact", "near"], default="exact")
    parser.add_argument("--pii", choices=["off", "flag", "redact", "drop"], default="off")
    parser.add_argument("--workers", type=lambda v: v if v == "auto" else int(v), default="auto",
                        help="processes for the per-row work (auto: one per idle CPU for large files)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = PrepareConfig(dedup=args.dedup, pii=args.pii, near_dup_max_rows=max(args.rows, 1), clean=CleanConfig(),
                        workers=args.workers)
    with tempfile.TemporaryDirectory(prefix="zerotune-bench-") as tmp:
        data = Path(tmp) / "big.jsonl"
        start = time.perf_counter()
        size = generate(data, args.rows)
        print(f"generated {args.rows:,} rows, {size / 1e6:.0f} MB in {time.perf_counter() - start:.1f} s")
        load = os.getloadavg()[0]
        start, cpu = time.perf_counter(), time.process_time()
        report = prepare([str(data)], str(Path(tmp) / "out"), cfg, progress=args.progress)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_mb, child_cpu = children.ru_maxrss / 1024, children.ru_utime + children.ru_stime
    processes = report["settings"]["processes"]
    s = report["summary"]
    # On a shared machine wall time depends on the neighbours; CPU time shows what prepare itself costs.
    print(f"prepare (dedup={args.dedup}, pii={args.pii}, processes={processes}): {elapsed:.1f} s wall, "
          f"{args.rows / elapsed:,.0f} rows/s; CPU {cpu:.1f} s main + {child_cpu:.1f} s workers; "
          f"peak RSS {peak_mb:,.0f} MB main, {child_mb:,.0f} MB largest worker "
          f"(load average {load:.1f} on {os.cpu_count()} CPUs at start)")
    print(f"  {s['rows_in']:,} in -> {s['train']:,} train + {s['eval']:,} eval, "
          f"{report['cleanliness']['exact_duplicates']:,} exact duplicates removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
