"""Augmentation: filling {slot} templates, and paraphrasing by back-translation.

Template spec (YAML); slot names may be any word characters, CJK included:

    per_template: 50        # rows made per template (default: every combination, at most 1000)
    slots:
      年龄: [25, 34, 58]
      病史: [无, 高血压]
      case:                 # a joint slot fills several placeholders together, so that a
        - {症状: 发热三天, 诊断: 上呼吸道感染}   # symptom keeps the diagnosis that belongs to it
    templates:
      - input: 患者{年龄}岁，主诉{症状}，既往史{病史}。
        output: 建议{诊断}
        category: 医疗      # optional, like system
      - "患者{年龄}岁，主诉{症状}，既往史{病史} => 建议{诊断}"

Every augmented row carries "augmented": "template" or "back_translation".
"""

from __future__ import annotations

import math
import random
import re
from pathlib import Path
from typing import Callable, Protocol

import yaml

from zerotune.data.formats import DataError
from zerotune.data.reader import Problem

_SLOT = re.compile(r"\{(\w+)\}")
MAX_PER_TEMPLATE = 1000
LANGUAGES = {"zh": "Chinese", "en": "English", "ja": "Japanese", "ko": "Korean", "fr": "French",
             "de": "German", "es": "Spanish", "ru": "Russian"}


def _spec_error(path: str, message: str, field: str | None = None) -> DataError:
    return DataError([Problem(path, None, message, field)])


def load_spec(path: str) -> dict:
    """Read and check a template spec; errors name the file and the offending key."""
    try:
        spec = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise _spec_error(path, f"cannot read template spec: {err}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("templates"), list) or not spec["templates"]:
        raise _spec_error(path, "must be a mapping with a non-empty list", "templates")
    if not isinstance(spec.get("slots"), dict) or not spec["slots"]:
        raise _spec_error(path, "must be a mapping of slot name to a list of values", "slots")
    for name, values in spec["slots"].items():
        if not isinstance(values, list) or not values:
            raise _spec_error(path, "must be a non-empty list of values", f"slots.{name}")
        joint = [isinstance(v, dict) for v in values]
        if any(joint) and not all(joint):
            raise _spec_error(path, "mixes plain values and mappings", f"slots.{name}")
    return spec


def _parse_template(path: str, i: int, item) -> dict:
    if isinstance(item, str):
        if "=>" not in item:
            raise _spec_error(path, "has no output; write 'question => answer' or {input:, output:}",
                              f"templates[{i}]")
        user, answer = item.split("=>", 1)
        item = {"input": user.strip(), "output": answer.strip()}
    if not isinstance(item, dict) or not all(isinstance(item.get(k), str) and item[k].strip()
                                             for k in ("input", "output")):
        raise _spec_error(path, "needs non-empty string input and output", f"templates[{i}]")
    unknown = set(item) - {"input", "output", "system", "category"}
    if unknown:
        raise _spec_error(path, f"unknown key {sorted(unknown)[0]!r}", f"templates[{i}]")
    return item


def _groups_for(path: str, i: int, template: dict, slots: dict) -> list[str]:
    """Slot groups (plain or joint slot names) the template's placeholders draw from, in spec order."""
    needed = {n for key in ("input", "output", "system") for n in _SLOT.findall(template.get(key) or "")}
    groups = []
    for name, values in slots.items():
        provides = set(values[0]) if isinstance(values[0], dict) else {name}
        if provides & needed:
            groups.append(name)
            needed -= provides
    if needed:
        raise _spec_error(path, f"unknown slot {{{sorted(needed)[0]}}}", f"templates[{i}]")
    return groups


def _fill(text: str, values: dict) -> str:
    return _SLOT.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(), text)


def _combination(index: int, groups: list[str], slots: dict) -> dict:
    values = {}
    for name in reversed(groups):
        index, pick = divmod(index, len(slots[name]))
        chosen = slots[name][pick]
        values.update(chosen if isinstance(chosen, dict) else {name: chosen})
    return values


def fill_templates(spec_path: str, seed: int = 42) -> list[dict]:
    """Canonical rows made by filling a template spec's slots; same spec and seed, same rows.

    Args:
        spec_path: YAML spec (see module docstring).
        seed: picks which combinations when there are more than per_template.
    Returns:
        Rows tagged "augmented": "template", without repeats.
    Raises:
        DataError: the spec is unreadable or inconsistent (unknown slot, missing output, ...).
    """
    spec = load_spec(spec_path)
    slots, rng = spec["slots"], random.Random(seed)
    per_template = spec.get("per_template", MAX_PER_TEMPLATE)
    if not isinstance(per_template, int) or per_template < 1:
        raise _spec_error(spec_path, "must be a positive integer", "per_template")
    rows, seen = [], set()
    for i, item in enumerate(spec["templates"]):
        template = _parse_template(spec_path, i, item)
        groups = _groups_for(spec_path, i, template, slots)
        total = math.prod(len(slots[g]) for g in groups)
        picks = range(total) if total <= per_template else sorted(rng.sample(range(total), per_template))
        for index in picks:
            row = _template_row(template, _combination(index, groups, slots))
            key = tuple((m["role"], m["content"]) for m in row["messages"])
            if key not in seen:
                seen.add(key)
                rows.append(row)
    return rows


def _template_row(template: dict, values: dict) -> dict:
    system = _fill(template.get("system") or "", values)
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": _fill(template["input"], values)},
                 {"role": "assistant", "content": _fill(template["output"], values)}]
    row = {"messages": messages}
    if template.get("category"):
        row["category"] = str(template["category"])
    row["augmented"] = "template"
    return row


class Translator(Protocol):
    """Anything that translates a batch of texts from one language code to another."""

    def translate(self, texts: list[str], src: str, dst: str) -> list[str]: ...


class FunctionTranslator:
    """A user callable fn(texts, src, dst) -> texts as a Translator."""

    def __init__(self, fn: Callable[[list[str], str, str], list[str]]):
        self.fn = fn

    def translate(self, texts: list[str], src: str, dst: str) -> list[str]:
        return list(self.fn(texts, src, dst))


class LMTranslator:
    """The causal LM being tuned, prompted to translate.

    Args:
        generate: maps a batch of prompts to completions (e.g. zerotune.models.generate bound to a model).
    """

    PROMPT = "Translate the following {src} text into {dst}. Reply with the translation only.\n\n{text}"

    def __init__(self, generate: Callable[[list[str]], list[str]]):
        self.generate = generate

    def translate(self, texts: list[str], src: str, dst: str) -> list[str]:
        names = LANGUAGES.get(src, src), LANGUAGES.get(dst, dst)
        prompts = [self.PROMPT.format(src=names[0], dst=names[1], text=t) for t in texts]
        return [c.strip() for c in self.generate(prompts)]


class Seq2SeqTranslator:
    """Local seq2seq translation models (e.g. opus-mt-zh-en and opus-mt-en-zh folders), one per direction.

    Args:
        models: "src-dst" -> local model folder, e.g. {"zh-en": "models/opus-mt-zh-en"}.
        device: torch device string.
        max_new_tokens: translation length limit.
    """

    def __init__(self, models: dict[str, str], device: str = "cpu", max_new_tokens: int = 256):
        self.paths, self.device, self.max_new_tokens = dict(models), device, max_new_tokens
        self._loaded: dict[str, tuple] = {}

    def _load(self, pair: str) -> tuple:
        if pair not in self._loaded:
            if pair not in self.paths:
                raise ValueError(f"no translation model for {pair}; have {', '.join(self.paths) or 'none'}")
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer  # heavy; only when used
            path = self.paths[pair]
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForSeq2SeqLM.from_pretrained(path, local_files_only=True).to(self.device).eval()
            self._loaded[pair] = (tok, model)
        return self._loaded[pair]

    def translate(self, texts: list[str], src: str, dst: str) -> list[str]:
        import torch

        tok, model = self._load(f"{src}-{dst}")
        batch = tok(texts, return_tensors="pt", padding=True, truncation=True).to(self.device)
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False)
        return tok.batch_decode(out, skip_special_tokens=True)


def _checked(translator: Translator, texts: list[str], src: str, dst: str) -> list[str]:
    out = translator.translate(texts, src, dst)
    if not isinstance(out, list) or len(out) != len(texts) or not all(isinstance(t, str) for t in out):
        got = f"{len(out)} items" if isinstance(out, list) else type(out).__name__
        raise DataError([Problem("translator", None, f"{src}->{dst}: asked for {len(texts)} texts, got {got}")])
    return out


def back_translate(rows: list[dict], translator: Translator, src: str = "zh", pivot: str = "en",
                   batch_size: int = 16, progress: bool = False) -> list[dict]:
    """Paraphrase each row's user messages by a round trip src -> pivot -> src.

    Answers are left as they are: they may be code, JSON or exact facts a translation would bend.

    Args:
        rows: canonical rows to paraphrase.
        translator: any Translator.
        src: language of the data; pivot: the language in between.
        batch_size: texts per translate call.
        progress: show a tqdm bar on stderr.
    Returns:
        New rows tagged "augmented": "back_translation"; rows whose round trip came back empty or
        unchanged are left out.
    """
    from tqdm import tqdm

    out = []
    for start in tqdm(range(0, len(rows), batch_size), desc="back-translate", disable=not progress):
        batch = rows[start:start + batch_size]
        spots = [(r, i) for r, row in enumerate(batch) for i, m in enumerate(row["messages"]) if m["role"] == "user"]
        texts = [batch[r]["messages"][i]["content"] for r, i in spots]
        back = _checked(translator, _checked(translator, texts, src, pivot), pivot, src)
        new = [[dict(m) for m in row["messages"]] for row in batch]
        for (r, i), text in zip(spots, back):
            new[r][i]["content"] = text.strip()
        for row, messages in zip(batch, new):
            if all(m["content"] for m in messages) and messages != row["messages"]:
                extra = {"category": row["category"]} if "category" in row else {}
                out.append({"messages": messages, **extra, "augmented": "back_translation"})
    return out
