"""prepare end to end: the dirty fixture, atomic output, budgets, augmentation and the report."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from zerotune.config import PrepareConfig
from zerotune.data import prepare as prepare_mod
from zerotune.data.formats import DataError, read_examples
from zerotune.data.prepare import prepare

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"
DIRTY, CHAT = str(FIXTURES / "dirty.jsonl"), str(FIXTURES / "chat_crlf.jsonl")
HANZI = [chr(c) for c in range(0x4E00, 0x4E00 + 500)]  # distinct random texts are never near duplicates


@pytest.fixture(autouse=True)
def no_chart(request, monkeypatch):
    """Drawing report.png costs a third of a second; only the end-to-end test draws it."""
    if "dirty_file" not in request.node.name:
        monkeypatch.setattr("zerotune.data.report.plot", lambda report, path: Path(path).write_bytes(b""))


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def chars(messages: list[dict]) -> int:
    return sum(len(m["content"]) for m in messages)


def write_rows(tmp_path, rows: list[dict], name: str = "data.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_dirty_file_comes_out_clean_and_every_row_is_explained(tmp_path):
    out = tmp_path / "out"
    cfg = PrepareConfig(skip_invalid=True, pii="redact", categories=("医疗", "售后", "编程", "常识", "法律"))
    report = prepare([DIRTY, CHAT], str(out), cfg, eval_fraction=0.2, progress=False)
    assert {p.name for p in out.iterdir()} == {"train.jsonl", "eval.jsonl", "report.md", "report.json",
                                              "report.png", "rejects.jsonl"}
    train, evals, rejects = lines(out / "train.jsonl"), lines(out / "eval.jsonl"), lines(out / "rejects.jsonl")
    # every input row is accounted for: kept in a split or rejected with a reason
    assert report["summary"]["rows_in"] == 29 == len(train) + len(evals) + len(rejects)
    assert {(r["stage"], r["line"]) for r in rejects} == {
        ("invalid", 9), ("invalid", 13), ("invalid", 16), ("invalid", 19), ("invalid", 4),
        ("duplicate", 7), ("duplicate", 17), ("near_duplicate", 4)}
    assert all(r["reason"] and r["file"] for r in rejects)
    dup = next(r for r in rejects if r["line"] == 17)
    assert dup["duplicate_of"] == f"{DIRTY}:15"
    # clean: no PII, no HTML, no zero-width characters; code and JSON intact
    text = json.dumps(train + evals, ensure_ascii=False)
    for leaked in ("13812345678", "service@example.com", "11010519491231002X", "4111 1111 1111 1111", "<b>", "\u200b"):
        assert leaked not in text
    answers = [m["content"] for r in train + evals for m in r["messages"] if m["role"] == "assistant"]
    assert '{"name": "zerotune", "epochs": 3, "lr": 0.0004}' in answers
    assert "```python\ndef square(x):\n    return x * x\n```" in answers
    # the lead's reader accepts the output
    assert len(read_examples(str(out / "train.jsonl"))) == len(train)
    # the report explains it
    assert report["coverage"]["uncovered"] == ["法律"]
    assert report["cleanliness"]["pii"]["hits"]["cn_id"] == 1
    assert report["consistency"]["formats"] == {"io": 21, "messages": 3}
    assert report["warnings"] == [f"{CHAT}: Windows (CRLF) line endings; accepted"]
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "What happened to every row" in md and "mixed formats" in md and "法律" in md
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    steps = report["steps"]
    assert all(a["after"] == b["before"] for a, b in zip(steps, steps[1:]))


def test_invalid_input_fails_with_every_problem_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        prepare([DIRTY], str(out), progress=False)
    message = str(err.value)
    assert f"{DIRTY}:13: invalid JSON" in message and f"{DIRTY}:19: wrong type" in message
    assert "--skip-invalid" in message
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_directory_as_input_fails_even_with_skip_invalid(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        prepare([str(tmp_path)], str(tmp_path / "out"), PrepareConfig(skip_invalid=True), progress=False)


def test_mixed_formats_can_be_allowed(tmp_path):
    cfg = PrepareConfig(skip_invalid=True, allow_mixed_formats=True)
    report = prepare([DIRTY], str(tmp_path / "out"), cfg, progress=False)
    assert report["consistency"]["formats"]["alpaca"] == 1


def test_failure_mid_write_leaves_no_train_file(tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = prepare_mod._write_splits

    def broken(folder, *args):
        real(folder, *args)
        (folder / "train.jsonl").write_text('{"messages": [', encoding="utf-8")  # half-written
        raise OSError("disk full")

    monkeypatch.setattr(prepare_mod, "_write_splits", broken)
    with pytest.raises(OSError, match="disk full"):
        prepare([CHAT], str(out), PrepareConfig(skip_invalid=True), progress=False)
    assert not (out / "train.jsonl").exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind


def test_rerun_replaces_only_prepare_files(tmp_path):
    out = tmp_path / "run" / "data"
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("keep me")
    (out / "rejects.jsonl").write_text("stale\n")
    prepare([CHAT], str(out), PrepareConfig(skip_invalid=True), progress=False)
    assert (out / "notes.txt").read_text() == "keep me"
    assert "stale" not in (out / "rejects.jsonl").read_text()
    path = write_rows(tmp_path, [{"input": f"q{i}", "output": "a"} for i in range(5)])
    prepare([path], str(out), progress=False)
    assert not (out / "rejects.jsonl").exists()  # stale output of the earlier run is gone
    assert (out / "notes.txt").exists()


def test_output_path_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="not a directory"):
        prepare([CHAT], str(tmp_path / "f"), progress=False)


def test_token_budget_drops_or_truncates(tmp_path):
    rows = [{"input": "short", "output": "fine"}, {"input": "q", "output": "x" * 100},
            {"input": "y" * 100, "output": "a"}]
    path = write_rows(tmp_path, rows)
    report = prepare([path], str(tmp_path / "a"), eval_fraction=0, count_tokens=chars, max_tokens=40, progress=False)
    assert report["summary"]["train"] == 1 and report["cleanliness"]["rejects"] == {"too_long": 2}
    report = prepare([path], str(tmp_path / "b"), PrepareConfig(too_long="truncate"), eval_fraction=0,
                     count_tokens=chars, max_tokens=40, progress=False)
    kept = lines(tmp_path / "b" / "train.jsonl")
    assert [chars(r["messages"]) for r in kept] == [9, 40]  # the long answer cut to fit; long question dropped
    assert report["cleanliness"]["truncated"] == 1 and report["cleanliness"]["rejects"] == {"too_long": 1}


def test_pii_drop_rejects_rows(tmp_path):
    path = write_rows(tmp_path, [{"input": "mail a@b.com", "output": "ok"}, {"input": "q", "output": "a"}])
    report = prepare([path], str(tmp_path / "o"), PrepareConfig(pii="drop"), progress=False)
    (reject,) = lines(tmp_path / "o" / "rejects.jsonl")
    assert reject["stage"] == "pii" and reject["reason"] == "contains PII: email"
    assert report["summary"]["train"] + report["summary"]["eval"] == 1


def test_nothing_left_is_an_error(tmp_path):
    path = write_rows(tmp_path, [{"input": "<br>", "output": "a"}])
    with pytest.raises(DataError, match="no usable rows left"):
        prepare([path], str(tmp_path / "o"), progress=False)


def test_stratified_split_and_augmentation_never_reaches_eval(tmp_path):
    rng = random.Random(0)
    rows = [{"input": "怎么" + "".join(rng.choices(HANZI, k=16)), "output": "".join(rng.choices(HANZI, k=8)),
             "category": cat} for cat in ("甲", "乙") for _ in range(20)]
    path = write_rows(tmp_path, rows)

    class Fake:
        def translate(self, texts, src, dst):
            return [f"<{t}>" for t in texts] if dst == "en" else [t[1:-1].replace("怎么", "如何") for t in texts]

    out = tmp_path / "o"
    report = prepare([path], str(out), eval_fraction=0.2, seed=1, translator=Fake(),
                     template_spec=str(FIXTURES / "templates.yaml"), progress=False)
    train, evals = lines(out / "train.jsonl"), lines(out / "eval.jsonl")
    assert [r["category"] for r in evals].count("甲") == 4 and len(evals) == 8
    assert not any("augmented" in r for r in evals)
    kinds = [r.get("augmented") for r in train]
    # 32 train rows paraphrased; a paraphrase too close to its source counts as a near duplicate
    assert 28 <= kinds.count("back_translation") <= 32 and kinds.count("template") == 12
    eval_questions = {r["messages"][0]["content"].replace("怎么", "如何") for r in evals}
    assert not any(r["messages"][0]["content"] in eval_questions for r in train if r.get("augmented"))
    assert report["summary"]["augmented"] == 12 + kinds.count("back_translation")
    assert prepare([path], str(tmp_path / "o2"), eval_fraction=0.2, seed=1, progress=False)["summary"]["eval"] == 8
    assert lines(tmp_path / "o2" / "eval.jsonl") == evals  # seeded split


def test_augmented_duplicates_of_originals_are_dropped(tmp_path):
    path = write_rows(tmp_path, [{"input": "患者30岁，主诉发热，既往史无", "output": "建议多休息"},
                                 {"input": "other", "output": "row"}])
    spec = tmp_path / "s.yaml"
    spec.write_text("slots: {年龄: [30, 40]}\ntemplates: ['患者{年龄}岁，主诉发热，既往史无 => 建议多休息']\n",
                    encoding="utf-8")
    report = prepare([path], str(tmp_path / "o"), PrepareConfig(dedup="exact"), eval_fraction=0,
                     template_spec=str(spec), progress=False)
    assert report["summary"]["augmented"] == 1
    assert "1 exact duplicate" in report["steps"][-1]["note"]


def test_near_dedup_skipped_above_limit_is_reported(tmp_path):
    path = write_rows(tmp_path, [{"input": f"q{i}", "output": "a"} for i in range(5)])
    report = prepare([path], str(tmp_path / "o"), PrepareConfig(near_dup_max_rows=3), progress=False)
    assert report["cleanliness"]["near_dedup"] == "skipped: 5 rows > near_dup_max_rows=3"
    assert "skipped: 5 rows" in (tmp_path / "o" / "report.md").read_text(encoding="utf-8")


def test_lone_surrogate_is_an_invalid_row(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"input": "q\\ud800", "output": "a"}\n{"input": "q", "output": "a"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"d.jsonl:1: invalid Unicode: a lone surrogate"):
        prepare([str(path)], str(tmp_path / "o"), progress=False)
    report = prepare([str(path)], str(tmp_path / "o"), PrepareConfig(skip_invalid=True), progress=False)
    assert report["cleanliness"]["rejects"] == {"invalid": 1} and report["summary"]["rows_in"] == 2
    (reject,) = lines(tmp_path / "o" / "rejects.jsonl")
    assert reject["line"] == 1 and "lone surrogate" in reject["reason"]


def test_custom_pii_profile_and_bad_profile(tmp_path):
    path = write_rows(tmp_path, [{"input": "ticket ORD-123456 please", "output": "ok"}])
    rules = tmp_path / "rules.yaml"
    rules.write_text("- {name: order, regex: 'ORD-\\d{6}', action: redact}\n", encoding="utf-8")
    prepare([path], str(tmp_path / "o"), PrepareConfig(pii="redact", pii_rules=str(rules)), eval_fraction=0,
            progress=False)
    assert lines(tmp_path / "o" / "train.jsonl")[0]["messages"][0]["content"] == "ticket [ORDER] please"
    rules.write_text("- {name: order, regex: '(', action: redact}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"rules.yaml: rule 0 \(order\): bad regex"):
        prepare([path], str(tmp_path / "p"), PrepareConfig(pii_rules=str(rules)), progress=False)


def test_augmented_rows_get_the_same_pii_policy(tmp_path):
    path = write_rows(tmp_path, [{"input": "q", "output": "a"}])
    spec = tmp_path / "s.yaml"
    spec.write_text("slots: {who: [a@b.com, 客服]}\ntemplates: ['联系{who} => 好的']\n", encoding="utf-8")
    report = prepare([path], str(tmp_path / "o"), PrepareConfig(pii="drop"), eval_fraction=0,
                     template_spec=str(spec), progress=False)
    assert report["summary"]["augmented"] == 1 and "1 PII" in report["steps"][-1]["note"]
    assert report["cleanliness"]["rejects"] == {}  # input rows only: generated ones are not rejects


def test_worker_processes_give_the_same_result(tmp_path, monkeypatch):
    from zerotune.data import stream

    pools = []

    class Spy(stream.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(stream, "ProcessPoolExecutor", Spy)
    cfg = dict(skip_invalid=True, pii="redact", dedup="exact")
    one = prepare([DIRTY, CHAT], str(tmp_path / "one"), PrepareConfig(workers=1, **cfg), progress=False)
    assert pools == []
    two = prepare([DIRTY, CHAT], str(tmp_path / "two"), PrepareConfig(workers=2, **cfg), progress=False)
    assert pools == [(2,)]
    for name in ("train.jsonl", "eval.jsonl", "rejects.jsonl"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    for section in ("summary", "steps", "consistency", "cleanliness", "coverage"):
        assert one[section] == two[section]


def test_auto_workers_only_for_large_files_and_idle_cpus(tmp_path, monkeypatch):
    from zerotune.data import stream

    small = tmp_path / "small.jsonl"
    small.write_text('{"input": "a", "output": "b"}\n')
    assert stream.auto_workers([str(small)]) == 1  # pool start-up would cost more than it saves
    big = tmp_path / "big.jsonl"
    with big.open("wb") as f:
        f.truncate(stream.AUTO_MIN_BYTES)
    monkeypatch.setattr(stream, "idle_cpus", lambda: 1.6)
    assert stream.auto_workers([str(big)]) == 2
    monkeypatch.setattr(stream, "idle_cpus", lambda: 0.3)  # every core busy elsewhere: one process
    assert stream.auto_workers([str(big)]) == 1
    monkeypatch.setattr(stream, "idle_cpus", lambda: 64.0)
    assert stream.auto_workers([str(big)]) == stream.AUTO_MAX_WORKERS
    report = prepare([str(small)], str(tmp_path / "out"), PrepareConfig(), progress=False)
    assert report["settings"]["processes"] == 1
