"""Per-field scores of structured answers: accuracy, what was written instead, copy vs label."""

import json

from zerotune.evaluate.fields import field_lines, field_scores, record
from zerotune.evaluate.report import write_report


def _json(name, oid, issue):
    return json.dumps({"name": name, "order_id": oid, "issue": issue})


QUESTIONS = ["Maria Lopez, order 48213: it is overdue", "Chen Wei here, parcel came without it",
             "Ana, order 9: not what I ordered", "Tom Kim, order 77: it is overdue"]
REFS = [_json("Maria Lopez", "48213", "late"), _json("Chen Wei", None, "missing"),
        _json("Ana", "9", "wrong_item"), _json("Tom Kim", "77", "late")]
PREDS = [_json("Lopez", "48213", "missing"), _json("Chen Wei", None, "missing"),
         "not json at all", _json("Tom Kim", "77", "late")]


def test_record_reads_json_and_key_value_answers():
    assert record('{"a": "x", "b": null, "c": {"d": 3, "e": true}}') == {"a": "x", "b": "null", "c.d": "3",
                                                                          "c.e": "true"}
    assert record("性别:女;年龄:43;症状:背痛") == {"性别": "女", "年龄": "43", "症状": "背痛"}
    assert record("just some words") is None and record('{"broken": ') is None


def test_field_scores_count_misses_and_what_was_written():
    scores = field_scores(QUESTIONS, PREDS, REFS)
    assert list(scores) == ["name", "order_id", "issue"]
    name, oid, issue = scores["name"], scores["order_id"], scores["issue"]
    assert (name["kind"], oid["kind"], issue["kind"]) == ("copy", "copy", "label")
    assert name["rows"] == 4 and name["wrong"] == 2 and name["accuracy"] == 0.5
    # an unstructured answer misses every field, written as None
    assert sorted(name["confusions"], key=str) == sorted([["Maria Lopez", "Lopez", 1], ["Ana", None, 1]], key=str)
    assert oid["wrong"] == 1 and oid["confusions"] == [["9", None, 1]]  # null expected and written: right
    assert issue["accuracy"] == 0.5
    assert issue["values"] == {"late": [1, 2], "missing": [1, 1], "wrong_item": [0, 1]}
    assert ["late", "missing", 1] in issue["confusions"]
    assert "values" not in name


def test_confusions_are_ordered_and_capped():
    refs = [_json("A", "1", "late")] * 7 + [_json("A", "1", "billing")] * 9
    preds = [_json("A", "1", "missing")] * 4 + [_json("A", "1", "defective")] * 3 + \
        [_json("A", "1", x) for x in ("a", "b", "c", "d", "e", "f", "a", "a", "billing")]
    issue = field_scores(["A order 1"] * 16, preds, refs)["issue"]
    assert issue["wrong"] == 15 and len(issue["confusions"]) == 5
    assert issue["confusions"][:3] == [["late", "missing", 4], ["late", "defective", 3], ["billing", "a", 3]]


def test_schema_kinds_win_and_free_text_gives_none():
    assert field_scores(["q"], ["a"], ["free text answer"]) is None
    scores = field_scores(QUESTIONS, PREDS, REFS, kinds={"name": "label"})
    assert scores["name"]["kind"] == "label" and scores["name"]["values"]["Ana"] == [0, 1]
    zh = field_scores(["女士，43岁，背痛"], ["性别:女;年龄:34;症状:背痛"], ["性别:女;年龄:43;症状:背痛"])
    assert [zh[k]["accuracy"] for k in zh] == [1.0, 0.0, 1.0]
    assert zh["年龄"]["confusions"] == [["43", "34", 1]]


def test_report_shows_the_field_tables(tmp_path):
    fields = {"tuned": field_scores(QUESTIONS, PREDS, REFS)}
    samples = [{"input": q, "expected": r, "prediction": p, "exact": p == r} for q, r, p in zip(QUESTIONS, REFS, PREDS)]
    write_report(tmp_path, {"tuned": {"exact_match": 0.25, "n": 4}}, samples=samples, thresholds={},
                 metrics_jsonl=None, config_yaml=None, fields=fields)
    md = (tmp_path / "eval" / "report.md").read_text(encoding="utf-8")
    assert "## Fields, tuned model" in md
    assert "| issue | label | 0.500 | 2/4 |" in md and "late -> missing x1" in md
    assert "- issue: late 1/2, missing 1/1, wrong_item 0/1" in md
    page = (tmp_path / "eval" / "report.html").read_text(encoding="utf-8")
    assert "Fields, tuned model" in page and "late -&gt; missing x1" in page
    assert field_lines(fields["tuned"])[1][:4] == ["order_id", "copy", "0.750", "1/4"]
