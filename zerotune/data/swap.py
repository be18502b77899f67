"""Augmentation from copy slots: slot swap (fresh values) and phrasing mix (other rows' values).

    slot_swap      "Hi, Maria Lopez, order 48213"  ->  "Hi, Tessa Brandt, order 90517"   (answer alike)
    phrasing_swap  row A's sentence with row B's values: phrasing and values stop travelling together

Both only rewrite rows whose swap is unambiguous (slots.rewrite), never bring into a row an eval value
its source row lacks (a fresh value is never an eval value, part of one or holder of one), and are
seeded: same rows, same seed, same output. A new value keeps the old one's kind and shape: digits of the
same length, as many Latin words with the same capitals, Han words of the same length and part of
speech (jieba's dictionary; only when asked: on a Chinese clinic task swapping Han values made exact
match worse).
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter, defaultdict
from importlib import resources, util
from typing import Collection, Iterable

from zerotune.data.slots import (_CJK_CHAR, MIN_VALUE, Slot, copy_fields, detect_slots, rewrite, slot_coverage,
                                 slot_values)

ATTEMPTS = 20  # draws per value before a row is given up (the value pool is nearly all taken)
MIN_JIEBA_FREQ = 20  # rarer dictionary entries are mostly names and jargon, not plain words
# Common concrete English words: the fallback when no tokenizer vocabulary is given. Label-like words
# (refund, late, missing...) are left out so a swapped value never reads as a category.
WORDS = """
apple anchor arrow autumn badge bamboo banner barrel basket beacon bell berry blanket bloom bottle
branch breeze brick bridge bright brook brush bubble bucket button cabin cable cactus camera candle
canvas canyon carbon carpet castle cedar chalk cherry chess circle cliff cloud clover coast cobalt
coffee comet copper coral cotton crane crystal cup daisy delta desert diamond dolphin dragon drum
eagle echo ember emerald engine falcon feather fern field finch flame flint forest fossil fountain
fox frost garden garnet ginger glacier globe granite grape harbor hazel helmet heron hill honey
horizon island ivory jade jasmine jelly jewel jungle kettle kite ladder lagoon lantern laurel lava
leaf lemon library lily linen lion lotus magnet maple marble meadow melon mint mirror monsoon moss
mountain nectar needle nickel north oak oasis ocean olive onyx orange orchid otter owl paddle palm
panda paper pearl pebble pepper piano pine planet plum pocket pond poppy prairie prism quartz quill
rabbit radar rain raven reef ribbon river robin rocket rose ruby saddle saffron sage sail salmon sand
satin scarlet shadow shell silver sky slate snow sparrow spice spring spruce star stone storm summit
sun swan thistle thunder tiger timber topaz tower trail tulip tundra valley velvet violet walnut wave
willow window winter wolf wren yarrow zephyr amber arch atlas beam birch blaze bolt bronze
canopy cello cinder citrus clay coil compass corner cove creek crest dawn dune dusk easel elm fable
ferry fiber fjord flora foam forge galaxy gate gem glade glow gravel grove gull haven hearth hollow
iris jasper juniper kelp knot lark ledge lime loom lunar maze mesa meteor mist moon nova opal orbit
patch petal pier plaza polar quest ridge rapids rustic sable scout sequoia sierra spark spire stream
strand sunset tango terrace tide torch trellis umber vapor vista wharf wick zinc bramble cosmos
""".split()


class Guard:
    """Keeps eval values out of augmented rows.

    A fresh value is never an eval value, part of one, or holder of one. A finished row may hold an eval
    value only if its source row or train's slot values already do: when eval was split off the same
    data, values shared with train are trained on anyway, and moving them between rows leaks nothing.

    Args:
        values: the eval rows' copy-slot values.
        known: the train rows' copy-slot values (eval values among them are no news to a row).
    """

    def __init__(self, values: Iterable[str], known: Iterable[str] = ()):
        self.values = {v for v in values if len(v) >= MIN_VALUE}
        self.known = set(known)
        self.exact, self.folded = self._index(self.values), self._index({v.lower() for v in self.values})
        self.blob = "\n".join(sorted({v.lower() for v in self.values}))  # one search finds "part of a value"

    @staticmethod
    def _index(values: set[str]) -> dict[str, list[str]]:
        # By first two characters: a text is then checked in one pass, whatever the number of values.
        index = defaultdict(list)
        for v in sorted(values):
            index[v[:2]].append(v)
        return index

    def found(self, text: str, folded: bool = False) -> set[str]:
        """The eval values standing in text (text and values lower-cased if folded)."""
        index = self.folded if folded else self.exact
        pairs = {text[i:i + 2] for i in range(len(text) - 1)} & index.keys()
        return {v for pair in pairs for v in index[pair] if v in text}

    def touches(self, text: str) -> bool:
        """True when text is part of an eval value or holds one (ignoring case)."""
        low = text.lower()
        return low in self.blob or bool(self.found(low, folded=True))

    def leaks(self, new: dict, source: dict) -> bool:
        """True when the new row holds an eval value that neither its source row nor train's values hold."""
        return bool(self.found(_text(new)) - self.found(_text(source)) - self.known)


class Pools:
    """Where fresh values come from: Latin words, jieba's dictionary, random digits.

    Args:
        guard: eval values the pools leave out.
        vocab: candidate words (e.g. a tokenizer's whole-word tokens); None = WORDS.
    """

    def __init__(self, guard: Guard, vocab: Iterable[str] | None = None):
        self.guard = guard
        words = sorted({w.lower() for w in (vocab or WORDS) if w.isascii() and w.isalpha() and 3 <= len(w) <= 10})
        self.words = [w for w in words if not guard.touches(w)]
        self._han: dict | None = None

    def han(self) -> dict:
        """(length, part of speech) -> words, and word -> part of speech, from jieba's dictionary."""
        if self._han is None:
            by_shape, tags = defaultdict(list), {}
            text = resources.files("jieba").joinpath("dict.txt").read_text(encoding="utf-8")
            for line in text.splitlines():
                word, freq, tag = (line.split() + ["", "", ""])[:3]
                if freq.isdigit() and re.fullmatch("[\u4e00-\u9fff]+", word):
                    tags[word] = tag
                    if int(freq) >= MIN_JIEBA_FREQ:
                        by_shape[(len(word), tag)].append(word)
            self._han = {"shape": by_shape, "tag": tags}
        return self._han

    def draw(self, rng: random.Random, slot: Slot) -> str | None:
        """A new value of the slot's kind and shape (not yet checked against eval or the row)."""
        if slot.kind == "digits":
            first = string.digits if slot.value[0] == "0" or len(slot.value) == 1 else "123456789"
            return rng.choice(first) + "".join(rng.choices(string.digits, k=len(slot.value) - 1))
        if slot.kind == "latin":
            return self._latin(rng, slot.value) if self.words else None
        if slot.kind == "cjk":
            han = self.han()
            tag = han["tag"].get(slot.value, "n")
            pool = han["shape"].get((len(slot.value), tag)) or han["shape"].get((len(slot.value), "n"))
            return rng.choice(pool) if pool else None
        return None

    def _latin(self, rng: random.Random, value: str) -> str:
        parts = re.split(r"([ '\-]+)", value)
        out = []
        for k, part in enumerate(parts):
            if k % 2:  # a separator: kept, so "Smith-Jones" stays hyphenated
                out.append(part)
                continue
            word = rng.choice(string.ascii_lowercase) if len(part) == 1 else rng.choice(self.words)
            out.append(word.upper() if part.isupper() and len(part) > 1
                       else word.capitalize() if part[0].isupper() else word)
        return "".join(out)


def jieba_available() -> bool:
    """Whether jieba (the Chinese word dictionary slot swap draws Han words from) is installed."""
    return util.find_spec("jieba") is not None


def _copies(rng: random.Random, ratio: float) -> int:
    whole = int(ratio)
    return whole + (rng.random() < ratio - whole)


def _key(row: dict) -> tuple:
    return tuple((m["role"], m["content"]) for m in row["messages"])


def _text(row: dict) -> str:
    return "\n".join(m["content"] for m in row["messages"])


def _swapped(row: dict, slots: list[Slot], rng: random.Random, pools: Pools) -> tuple[dict | None, str]:
    """One swapped copy of a row, or None and why not."""
    text, mapping = _text(row), {}
    for slot in slots:
        if slot.value in mapping:
            continue
        for _ in range(ATTEMPTS):
            new = pools.draw(rng, slot)
            if new is None or (new != slot.value and new not in text and new not in mapping.values()
                               and not pools.guard.touches(new)):
                break
        else:
            new = None
        if new is None:
            return None, "no fresh value"
        mapping[slot.value] = new
    new_row = rewrite(row, mapping)
    if new_row is None:
        return None, "ambiguous swap"
    return _finish(new_row, row, "slot_swap", pools.guard)


def _keep(new: dict | None, why: str, seen: set, skipped: Counter, out: list[dict]) -> None:
    """Adds a finished row to out unless it is None (counted under why) or already seen (a duplicate)."""
    if new is not None and _key(new) in seen:
        new, why = None, "duplicate"
    if new is None:
        skipped[why] += 1
        return
    seen.add(_key(new))
    out.append(new)


def single_question(row: dict) -> tuple[int, str] | None:
    """(message index, text) of a row's only user message; None for multi-turn rows."""
    users = [k for k, m in enumerate(row["messages"]) if m["role"] == "user"]
    return (users[0], row["messages"][users[0]]["content"]) if len(users) == 1 else None


def with_question(row: dict, k: int, text: str) -> dict:
    """A copy of the row whose message k says text."""
    return {**row, "messages": [dict(m, content=text) if i == k else dict(m) for i, m in enumerate(row["messages"])]}


def _finish(new: dict, source: dict, tag: str, guard: Guard) -> tuple[dict | None, str]:
    if guard.leaks(new, source):
        return None, "would hold an eval value"
    new["augmented"] = tag
    return new, ""


def _prepare(rows: list[dict], eval_rows: list[dict], names: Collection[str] | None) -> tuple[set, Guard, set]:
    names = set(copy_fields(slot_coverage(rows)) if names is None else names)
    seen = {_key(r) for r in rows} | {_key(r) for r in eval_rows}
    return names, Guard(slot_values(eval_rows, names), slot_values(rows, names)), seen


def slot_swap(rows: list[dict], eval_rows: list[dict], *, seed: int, ratio: float = 1.0,
              kinds: Collection[str] = ("latin", "digits"), vocab: Iterable[str] | None = None,
              names: Collection[str] | None = None, skipped: Counter | None = None) -> list[dict]:
    """Copies of rows with every copy-slot value replaced by a fresh one of the same kind and shape.

    Args:
        rows: canonical train rows.
        eval_rows: held-out rows; a fresh value is never one of their slot values (nor part of one), and
            no new row holds one its source row lacks.
        seed: seeds every draw; same rows and seed, same output.
        ratio: swapped copies per row; the fraction gives that share of rows one more copy.
        kinds: value kinds replaced ("latin", "digits", "cjk"; cjk needs jieba); others keep their value.
        vocab: words for Latin values (e.g. a tokenizer's whole-word tokens); None = WORDS.
        names: copy fields to swap; None = those slot_coverage(rows) finds.
        skipped: when given, counts the copies given up, by reason.
    Returns:
        New rows tagged "augmented": "slot_swap", none equal to another, to a source or to an eval row.
    """
    names, guard, seen = _prepare(rows, eval_rows, names)
    pools, rng = Pools(guard, vocab), random.Random(seed)
    skipped = Counter() if skipped is None else skipped
    out = []
    for row in rows:
        slots = [s for s in detect_slots(row) if s.name in names and s.kind in kinds]
        for _ in range(_copies(rng, ratio) if slots else 0):
            _keep(*_swapped(row, slots, rng, pools), seen, skipped, out)
    return out


def _mixed(row: dict, slots: list[Slot], donor: list[Slot], guard: Guard) -> tuple[dict | None, str]:
    """Row's phrasing with the donor's values (paired by slot name, in order), or None and why not."""
    mapping, text = {}, _text(row)
    for old, new in zip(slots, donor):
        if old.value != new.value:
            if mapping.get(old.value, new.value) != new.value or new.value in text:
                return None, "ambiguous mix"
            mapping[old.value] = new.value
    if not mapping:
        return None, "same values"
    new_row = rewrite(row, mapping) if len(set(mapping.values())) == len(mapping) else None
    if new_row is None:
        return None, "ambiguous mix"
    return _finish(new_row, row, "template_mix", guard)


def phrasing_swap(rows: list[dict], eval_rows: list[dict], *, seed: int, ratio: float = 1.0,
                  names: Collection[str] | None = None, skipped: Counter | None = None) -> list[dict]:
    """Rows whose copied values are replaced by another row's: each row's template, other values.

    A row's template is its question and answer with placeholders where its copy slots stand; it is
    filled with the values of another row that has the same slot names.

    Args:
        rows: canonical train rows.
        eval_rows: held-out rows; no new row holds one of their slot values that its source row lacks.
        seed: seeds the choice of template and donor rows.
        ratio: rows made per eligible row (rows with copy slots), at most.
        names: copy fields to fill; None = those slot_coverage(rows) finds.
        skipped: when given, counts attempts given up, by reason.
    Returns:
        New rows tagged "augmented": "template_mix", none equal to another, to a source or to an eval row.
    """
    names, guard, seen = _prepare(rows, eval_rows, names)
    shaped = []
    for row in rows:
        slots = sorted((s for s in detect_slots(row) if s.name in names), key=lambda s: s.name)
        if slots:
            shaped.append((row, slots))
    groups, place = defaultdict(list), []
    for k, (_, slots) in enumerate(shaped):
        group = groups[tuple(s.name for s in slots)]
        place.append(len(group))
        group.append(k)
    rng, target = random.Random(seed), round(ratio * len(shaped))
    skipped = Counter() if skipped is None else skipped
    out = []
    for _ in range(target * 3 if target else 0):  # some draws repeat or clash; a few spare tries
        if len(out) >= target:
            break
        k = rng.randrange(len(shaped))
        row, slots = shaped[k]
        group = groups[tuple(s.name for s in slots)]
        if len(group) < 2:
            skipped["no row with the same slots"] += 1
            continue
        j = rng.randrange(len(group) - 1)
        donor = shaped[group[j + (j >= place[k])]][1]  # any row of the group but this one
        _keep(*_mixed(row, slots, donor, guard), seen, skipped, out)
    return out


# Clause order: Han text splits at its clause marks (the mark stays in place, the clauses move), Latin
# text at sentence ends (each sentence keeps its own mark).
_HAN_CLAUSE = re.compile(r"([^，。；！？]+)([，。；！？]|$)")
_SENTENCE = re.compile(r"\S.*?(?:[.!?]+(?=\s|$)|$)", re.S)
MIN_UNITS = 3  # fewer clauses give too few orders to teach anything but a swap of two


def _units(text: str) -> tuple[list[str], list[str]] | None:
    """(clauses, marks) of a question; marks are "" for sentences, which carry their own."""
    if _CJK_CHAR.search(text):
        found = [(m.group(1), m.group(2)) for m in _HAN_CLAUSE.finditer(text) if m.group(1)]
        if "".join(a + b for a, b in found) != text:
            return None  # text the split would not give back whole (e.g. leading marks)
        return [a for a, _ in found], [b for _, b in found]
    found = _SENTENCE.findall(text)
    if " ".join(found) != " ".join(text.split()) or any("\n" in s for s in found):
        return None
    return found, [""] * len(found)


def clause_order(rows: list[dict], eval_rows: list[dict], *, seed: int, ratio: float = 1.0,
                 names: Collection[str] | None = None, skipped: Counter | None = None) -> list[dict]:
    """Copies of rows whose question has its clauses (Han) or sentences (Latin) in another order; the
    answer is unchanged, so a field is found by what it says, not by where it stands.

    Only single-turn rows with at least MIN_UNITS clauses, and only orders that keep every copy value
    whole. No value is added, so nothing from eval can enter. A closing sentence without a mark of its
    own (a sign-off) stays last.

    Args:
        rows: canonical train rows.
        eval_rows: held-out rows (new rows never equal one).
        seed: seeds the orders.
        ratio: copies per eligible row; the fraction gives that share of rows one more copy.
        names: copy fields that must stay whole; None = those slot_coverage(rows) finds.
        skipped: when given, counts the copies given up, by reason.
    Returns:
        New rows tagged "augmented": "clause_order", none equal to another, to a source or to an eval row.
    """
    names, _, seen = _prepare(rows, eval_rows, names)
    rng, out = random.Random(seed), []
    skipped = Counter() if skipped is None else skipped
    for row in rows:
        question = single_question(row)
        split = None if question is None else _units(question[1])
        if split is None or len(split[0]) < MIN_UNITS:
            continue
        clauses, marks = split
        last = [] if marks[0] or re.search(r"[.!?]$", clauses[-1]) else [clauses.pop()]
        if len(clauses) < 2:
            continue
        values = [s.value for s in detect_slots(row) if s.name in names]
        for _ in range(_copies(rng, ratio)):
            order = list(range(len(clauses)))
            for _ in range(ATTEMPTS):
                rng.shuffle(order)
                if order != sorted(order):
                    break
            moved = [clauses[i] for i in order] + last
            if marks[0]:
                text = "".join(c + m for c, m in zip(moved, marks))
            else:
                text = " ".join(moved)
            if any(v not in text for v in values):
                skipped["a copied value would break"] += 1
                continue
            new = with_question(row, question[0], text)
            new["augmented"] = "clause_order"
            _keep(new, "", seen, skipped, out)
    return out
