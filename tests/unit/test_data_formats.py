"""Reading every supported format, and one test per kind of bad input."""

from __future__ import annotations

import json

import pytest

from zerotune.data.formats import DataError, Fields, iter_rows, read_examples
from zerotune.data.reader import Problem

IO = {"input": "问题", "output": "答案"}


def write(tmp_path, name: str, text: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def jsonl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows)


def problems(path: str, **kw) -> list[str]:
    with pytest.raises(DataError) as err:
        read_examples(path, **kw)
    return str(err.value).splitlines()


# --- formats -------------------------------------------------------------------------------

def test_io_with_system_and_category(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl({**IO, "system": "你是助手", "category": "医疗"}))
    assert read_examples(path) == [{"messages": [{"role": "system", "content": "你是助手"},
                                                 {"role": "user", "content": "问题"},
                                                 {"role": "assistant", "content": "答案"}], "category": "医疗"}]


def test_alpaca_joins_instruction_and_input(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl({"instruction": "翻译", "input": "猫", "output": "cat"},
                                            {"instruction": "打招呼", "input": "", "output": "你好"}))
    rows = read_examples(path)
    assert rows[0]["messages"][0] == {"role": "user", "content": "翻译\n\n猫"}
    assert rows[1]["messages"][0] == {"role": "user", "content": "打招呼"}


def test_messages_multi_turn_with_system(tmp_path):
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u1"},
            {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"},
            {"role": "assistant", "content": "a2"}]
    path = write(tmp_path, "a.jsonl", jsonl({"messages": msgs, "augmented": "template"}))
    assert read_examples(path) == [{"messages": msgs, "augmented": "template"}]


def test_sharegpt_roles_are_mapped(tmp_path):
    conv = [{"from": "system", "value": "s"}, {"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]
    path = write(tmp_path, "a.jsonl", jsonl({"conversations": conv}))
    assert [m["role"] for m in read_examples(path)[0]["messages"]] == ["system", "user", "assistant"]


def test_csv_with_column_mapping(tmp_path):
    path = write(tmp_path, "a.csv", 'question,answer,category\n"多行\n问题",答案,常识\nq2,a2,x\n')
    rows = read_examples(path, input_field="question", output_field="answer")
    assert rows[0] == {"messages": [{"role": "user", "content": "多行\n问题"},
                                    {"role": "assistant", "content": "答案"}], "category": "常识"}
    assert len(rows) == 2


def test_csv_problem_names_the_record_line(tmp_path):
    path = write(tmp_path, "a.csv", "input,output\nq1,a1\nq2,\n")
    assert problems(path) == [f"{path}:3: empty field (output)"]


def test_json_array_file_with_line_numbers(tmp_path):
    path = write(tmp_path, "a.json", '[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c"}\n]\n')
    assert problems(path) == [f"{path}:3: missing field (output)"]


def test_format_override_forces_one_format(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl({"instruction": "x", "input": "q", "output": "a"}))
    assert read_examples(path, fmt="io")[0]["messages"][0]["content"] == "q"


def test_detected_format_is_reported(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl({"conversations": [{"from": "human", "value": "q"},
                                                               {"from": "gpt", "value": "a"}]}))
    (item,) = list(iter_rows(path))
    assert item[2] == "sharegpt"


# --- bad input: one test per case -------------------------------------------------------------

def test_invalid_json(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl(IO, '{"input": "x", "output": '))
    (line,) = problems(path)
    assert line.startswith(f"{path}:2: invalid JSON:")


def test_missing_field(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl({"input": "q"}))
    assert problems(path) == [f"{path}:1: missing field (output)"]


def test_empty_field(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl({"input": "  ", "output": "a"}))
    assert problems(path) == [f"{path}:1: empty field (input)"]


def test_wrong_type(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl({"input": "q", "output": 42}))
    assert problems(path) == [f"{path}:1: wrong type: expected a string, got int (output)"]


def test_wrong_type_inside_messages(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl({"messages": [{"role": "user", "content": "q"},
                                                          {"role": "assistant", "content": ["a"]}]}))
    assert problems(path) == [f"{path}:1: wrong type: expected a string, got list (messages[1].content)"]


def test_bad_conversation_shape(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl(
        {"messages": [{"role": "user", "content": "q"}]},
        {"messages": [{"role": "bot", "content": "q"}]},
        {"messages": []},
        [1, 2]))
    out = problems(path)
    assert out[0] == f"{path}:1: last message must be the assistant's (nothing to learn otherwise) (messages[0].role)"
    assert out[1].startswith(f"{path}:2: unknown role 'bot'")
    assert out[2] == f"{path}:3: empty list (messages)"
    assert out[3] == f"{path}:4: row must be a JSON object, got list"


def test_non_utf8_bytes(tmp_path):
    path = write(tmp_path, "a.jsonl", b'{"input": "q", "output": "a"}\n{"input": "\xff\xfe", "output": "a"}\n')
    (line,) = problems(path)
    assert line.startswith(f"{path}:2: not valid UTF-8 (byte 0xff")


def test_utf16_file(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl(IO).encode("utf-16"))
    assert problems(path) == [f"{path}: file is UTF-16; save it as UTF-8"]


def test_bom_is_accepted_with_a_warning(tmp_path):
    path = write(tmp_path, "a.jsonl", b"\xef\xbb\xbf" + jsonl(IO).encode())
    warnings: list[str] = []
    rows = [r for r in iter_rows(path, warnings=warnings)]
    assert len(rows) == 1 and not isinstance(rows[0], Problem)
    assert warnings == [f"{path}: starts with a UTF-8 byte-order mark; ignored"]


def test_crlf_is_accepted_with_a_warning(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl(IO, {"input": "q2", "output": "a2"}).replace("\n", "\r\n").encode())
    warnings: list[str] = []
    rows = [r[1] for r in iter_rows(path, warnings=warnings)]
    assert [r["messages"][1]["content"] for r in rows] == ["答案", "a2"]
    assert warnings == [f"{path}: Windows (CRLF) line endings; accepted"]


def test_huge_line_is_rejected_without_reading_it_whole(tmp_path):
    big = json.dumps({"input": "x" * 5000, "output": "a"})
    path = write(tmp_path, "a.jsonl", jsonl(IO, big, IO))
    rows = list(iter_rows(path, max_line_bytes=2048))
    assert isinstance(rows[1], Problem) and str(rows[1]) == f"{path}:2: line longer than 2048 bytes (max_line_bytes)"
    assert rows[1].raw.endswith("...") and len(rows[1].raw) < 2100
    assert not isinstance(rows[2], Problem) and rows[2][0].line == 3


def test_empty_file(tmp_path):
    path = write(tmp_path, "a.jsonl", "")
    assert problems(path) == [f"{path}: file is empty (no rows)"]


def test_blank_lines_only_is_empty(tmp_path):
    path = write(tmp_path, "a.jsonl", "\n  \n")
    assert problems(path) == [f"{path}: file is empty (no rows)"]


def test_mixed_formats_in_one_file(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl(IO, {"instruction": "i", "output": "o"}))
    (line,) = problems(path)
    assert line == (f"{path}:2: mixed formats: this row is alpaca but the file is io (line 1); "
                    "use one format (format)")
    allowed = [r for r in iter_rows(path, allow_mixed=True)]
    assert [r[2] for r in allowed] == ["io", "alpaca"]


def test_duplicate_keys(tmp_path):
    path = write(tmp_path, "a.jsonl", '{"input": "q", "output": "a", "output": "b"}\n')
    assert problems(path) == [f"{path}:1: duplicate key; the value would be ambiguous (output)"]


def test_directory_given_as_file(tmp_path):
    assert problems(str(tmp_path)) == [f"{tmp_path}: is a directory, not a data file; pass the files inside it"]


def test_missing_file(tmp_path):
    assert problems(str(tmp_path / "nope.jsonl")) == [f"{tmp_path / 'nope.jsonl'}: no such file"]


def test_unknown_format_names_the_keys(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl({"question": "q", "answer": "a"}))
    (line,) = problems(path)
    assert "cannot tell the format" in line and "'question', 'answer'" in line and line.endswith("(format)")


def test_many_problems_listed_at_once_and_capped(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl(*[{"input": "q"}] * 30))
    out = problems(path, max_errors=5)
    assert len(out) == 6 and out[0] == f"{path}:1: missing field (output)"
    assert out[-1] == "... and 25 more problems (30 in all)"


def test_custom_fields_and_category_field():
    from zerotune.data.formats import to_row
    row = to_row({"q": "x", "a": "y", "topic": 7}, "io", Fields("q", "a", "topic"))
    assert row == {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                   "category": "7"}


def test_data_error_from_a_plain_message():
    err = DataError("data.jsonl: no training rows")
    assert str(err) == "data.jsonl: no training rows" and err.total == 1
    err = DataError([Problem("a.jsonl", 3, "empty field", "output")], hint="(hint)")
    assert str(err) == "a.jsonl:3: empty field (output)\n(hint)"
