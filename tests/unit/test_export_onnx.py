"""ONNX export: ONNX Runtime GenAI's greedy outputs equal PyTorch's, and (slow) how fast each runs
the real embedded model on this machine."""

from __future__ import annotations

import json
import time

import pytest
import torch

from test_export_common import PROMPTS, make_run


def torch_generate(model, prompts: list[list[int]], max_new_tokens: int, stops: set[int],
                   min_new_tokens: int = 0) -> list[list[int]]:
    """Greedy continuations one prompt at a time, cut before the first stop id (as generate_ids does)."""
    results = []
    for ids in prompts:
        with torch.inference_mode():
            out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                                 do_sample=False, eos_token_id=sorted(stops), pad_token_id=sorted(stops)[0])
        new = out[0, len(ids):].tolist()
        results.append(new[:next((i for i, t in enumerate(new) if t in stops), len(new))])
    return results


def timed(fn, *args, **kwargs) -> tuple[list[list[int]], float]:
    """fn's result and the new tokens it made per second."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, sum(len(r) for r in result) / (time.perf_counter() - start)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from zerotune.export import export

    run = make_run(tmp_path_factory.mktemp("onnx"), "llama", chat_template="chatml", small_vocab=True)
    return run / "export" / "merged", export(str(run), "onnx")


def test_onnx_greedy_outputs_equal_pytorchs(exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from zerotune.export.onnx import generate_ids, load_onnx, onnx_generate, stop_ids

    merged_dir, out = exported
    assert {"model.onnx", "genai_config.json", "tokenizer.json", "chat_template.jinja", "zerotune.json"} <= {
        p.name for p in out.iterdir()}
    assert json.loads((out / "zerotune.json").read_text())["precision"] == "fp32"
    tokenizer = AutoTokenizer.from_pretrained(str(merged_dir))
    stops = stop_ids(out)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stops
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    model = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
    want, torch_speed = timed(torch_generate, model, prompts, 24, stops)
    got, onnx_speed = timed(generate_ids, load_onnx(out), prompts, 24, stops)
    print(f"\ntiny model, greedy, one sequence: PyTorch {torch_speed:.0f} tok/s, ONNX fp32 {onnx_speed:.0f} tok/s")
    assert got == want
    assert onnx_generate(out, PROMPTS, 24) == [tokenizer.decode(w, skip_special_tokens=True).strip() for w in want]


def test_onnx_guidance_keeps_a_random_model_to_the_answer_schema(exported):
    """The grammar an export carries, per question, given to ONNX Runtime GenAI's guidance: a random model
    that writes junk freely writes a schema answer (labels from training, values copied from the question)."""
    import dataclasses

    from transformers import AutoTokenizer

    from zerotune.data.schema import Matcher, infer_schema
    from zerotune.export.grammar import lark
    from zerotune.export.onnx import generate_ids, load_onnx, stop_ids

    names = ["Ana Silva", "Tom Reyes", "Li Wei", "Omar Haddad", "Eva Novak", "Ben Costa", "Ida Sato", "Max Petrov"]
    rows = [{"messages": [{"role": "user", "content": f"Extract: {name}, order {1000 + 7 * i}"},
                          {"role": "assistant", "content": json.dumps(
                              {"name": name, "order_id": str(1000 + 7 * i), "kind": ["refund", "cancel"][i % 2]})}]}
            for i, name in enumerate(names)]
    schema = infer_schema(rows)[0]
    _, out = exported
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    question = "Extract: Maria Lopez, order 48213"
    assert question in PROMPTS[0]
    prompt = [tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]]
    model = load_onnx(out)
    free = tokenizer.decode(generate_ids(model, prompt, 60, stop_ids(out))[0], skip_special_tokens=True)
    kept_ids = generate_ids(model, prompt, 200, stop_ids(out), grammars=[lark(schema, question)])[0]
    kept = tokenizer.decode(kept_ids, skip_special_tokens=True)
    matcher = Matcher(dataclasses.replace(schema, disjoint=False), question)  # grammars leave out that one rule
    assert ("end",) not in matcher.states(free.encode())  # the control: free decoding is junk
    assert len(kept_ids) < 200 and ("end",) in matcher.states(kept.encode()), kept
    value = json.loads(kept)
    assert list(value) == ["name", "order_id", "kind"] and value["kind"] in ("refund", "cancel")
    assert value["name"] in question and value["order_id"].isdigit() and value["order_id"] in question


@pytest.mark.slow
def test_embedded_model_speed_pytorch_vs_onnx_fp32_vs_int4(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from zerotune.export.onnx import export_onnx, generate_ids, load_onnx, stop_ids
    from zerotune.models.embedded import embedded_dir

    source = embedded_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    questions = ["What is the capital of France?", "Write a haiku about the sea.", "Explain what a CPU does."]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)
               for q in questions]
    prompts = [p if isinstance(p, list) else p["input_ids"] for p in prompts]
    n, stops = 32, {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id}
    exported = {p: export_onnx(source, tmp_path / p, p) for p in ("fp32", "int4")}
    model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32).eval()
    default_threads = torch.get_num_threads()
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        torch_generate(model, prompts[:1], 4, stops)  # warm-up
        greedy, torch_speed = timed(torch_generate, model, prompts, n, stops, min_new_tokens=n)
        speeds = {"PyTorch fp32": torch_speed}
        for precision, out in exported.items():
            onnx_model = load_onnx(out, threads)
            generate_ids(onnx_model, prompts[:1], 4, stop_ids(out))  # warm-up: first run allocates the KV cache
            got, speeds[f"ONNX {precision}"] = timed(generate_ids, onnx_model, prompts, n, stop_ids(out),
                                                     min_new_tokens=n)
            if precision == "fp32":
                assert got == greedy
        print(f"\nembedded SmolLM2-135M, greedy, one sequence, {n} new tokens x {len(prompts)} prompts, "
              f"{threads} thread(s): " + ", ".join(f"{k} {v:.1f} tok/s" for k, v in speeds.items())
              + f"; ONNX fp32 = {speeds['ONNX fp32'] / torch_speed:.2f}x PyTorch, "
              f"ONNX int4 = {speeds['ONNX int4'] / torch_speed:.2f}x PyTorch")
    torch.set_num_threads(default_threads)
