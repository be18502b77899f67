"""A small text rule engine: regexes, named PII detectors with validators, and word lists.

prepare uses it to scrub PII from training data; the server's content filter uses the same rules on
prompts and completions. Rules are plain dicts so a profile can live in YAML:

    - {name: email, detector: email, action: redact}
    - {name: order_no, regex: '\\bORD-\\d{6}\\b', action: flag}
    - {name: banned, words: [foo, 违禁词], action: block, ignore_case: true}

Every rule has an action: block (the text must not pass), redact (replace the match) or flag
(report only). Detectors pair a loose pattern with a validator (Chinese resident ID checksum, Luhn
for card numbers) so random digit runs are not taken for PII.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import yaml

ACTIONS = ("block", "redact", "flag")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_CJK_PUNCT = "\u3000-\u303f\u4e00-\u9fff\uff00-\uffef"


class RuleError(ValueError):
    """A rule definition that cannot be used; the message names the rule and key."""


def cn_id_valid(text: str) -> bool:
    """Whether an 18-character Chinese resident ID has a plausible birth date and a correct check digit."""
    if len(text) != 18 or not text[:17].isdigit():
        return False
    year, month, day = int(text[6:10]), int(text[10:12]), int(text[12:14])
    if not (1900 <= year <= 2100 and 1 <= month <= 12 and 1 <= day <= 31):
        return False
    total = sum(int(d) * w for d, w in zip(text[:17], _ID_WEIGHTS))
    return _ID_CHECK[total % 11] == text[17].upper()


def luhn_valid(text: str) -> bool:
    """Whether a card number (spaces and dashes allowed) has 13-19 digits and passes the Luhn check."""
    digits = [int(c) for c in text if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True)
class Detector:
    """A named PII pattern and the cheap conditions a text must meet before it is worth running.

    Running a dozen regexes over every text is the whole cost of PII scanning, so each detector
    states what it cannot do without: a substring (hint), a longest run of digits (min_run) and a
    number of digits in the text (min_digits). Patterns start with a plain character where they can,
    which lets the regex engine skip ahead instead of trying every position.
    """

    pattern: str
    validator: Callable[[str], bool] | None = None
    hint: re.Pattern | None = None
    min_run: int = 0
    min_digits: int = 0


DETECTORS: dict[str, Detector] = {
    "email": Detector(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", hint=re.compile("@")),
    "cn_id": Detector(r"\d(?<![\dA-Za-z]\d)\d{16}[\dXx](?![\dA-Za-z])", cn_id_valid, min_run=17, min_digits=17),
    "card": Detector(r"\d(?<![\d-]\d)(?:[ -]?\d){12,18}(?![\d-])", luhn_valid, min_run=4, min_digits=13),
    "cn_mobile": Detector(r"1(?<![\d+]1)[3-9]\d{9}(?!\d)|\+86[ -]?1[3-9]\d{9}(?!\d)", min_run=11, min_digits=11),
    # Not part of a longer run of digit groups (a card number, a table of figures).
    "phone": Detector(r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]?\d{4}"
                      r"(?![ .-]?\d)", min_run=3, min_digits=9),
    "url": Detector(rf"(?:https?://|www\.)[^\s<>\"'{_CJK_PUNCT}]*[^\s<>\"'.,;:!?)\]{_CJK_PUNCT}]",
                    hint=re.compile(r"://|www\.")),
    # The seed's date pattern, plus the usual Chinese and slash forms.
    "date": Detector(r"\d(?<!\d\d)\d{3}(?:-\d{2}-\d{2}|/\d{1,2}/\d{1,2}|年\d{1,2}月\d{1,2}日)(?!\d)",
                     min_run=4, min_digits=6),
    # The seed's "certificate number" pattern: capitals then digits, e.g. passport E12345678 style.
    "doc_id": Detector(r"\b[A-Z]{2,}\d{3,}\b", min_run=3, min_digits=3),
}


def default_profile() -> list[dict]:
    """The shipped profile: every PII detector, redacted; order settles overlaps of equal span."""
    return [{"name": name, "detector": name, "action": "redact"} for name in DETECTORS]


@dataclass(frozen=True)
class Match:
    """One hit of one rule in one text."""

    rule: str
    action: str
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Verdict:
    """What the rules made of a text: the redacted text, every match, and whether it is blocked."""

    text: str
    matches: tuple[Match, ...]
    blocked: bool


@dataclass(frozen=True)
class Rule:
    """One compiled rule."""

    name: str
    action: str
    pattern: re.Pattern
    validator: Callable[[str], bool] | None = None
    replacement: str = ""
    detector: Detector | None = None


def _words_pattern(words: list, where: str, flags: int) -> re.Pattern:
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and w for w in words):
        raise RuleError(f"{where}: words must be a non-empty list of strings")
    # Latin words match whole words only; CJK has no spaces to mark word edges.
    alts = [rf"\b{re.escape(w)}\b" if w.isascii() else re.escape(w) for w in sorted(words, key=len, reverse=True)]
    return re.compile("|".join(alts), flags)


def rule_from_dict(spec: dict, index: int = 0) -> Rule:
    """Compile one rule dict.

    Args:
        spec: {name, action, one of detector|regex|words, replacement?, ignore_case?}.
        index: position in its profile, for error messages.
    Returns:
        The compiled Rule.
    Raises:
        RuleError: unknown key, action or detector, bad regex, or not exactly one matcher.
    """
    where = f"rule {index}" + (f" ({spec.get('name')})" if isinstance(spec, dict) and spec.get("name") else "")
    if not isinstance(spec, dict):
        raise RuleError(f"{where}: must be a mapping")
    unknown = set(spec) - {"name", "action", "detector", "regex", "words", "replacement", "ignore_case"}
    if unknown:
        raise RuleError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    name, action = spec.get("name"), spec.get("action", "flag")
    if not isinstance(name, str) or not name:
        raise RuleError(f"{where}: name must be a non-empty string")
    if action not in ACTIONS:
        raise RuleError(f"{where}: action must be one of {', '.join(ACTIONS)}, not {action!r}")
    kinds = [k for k in ("detector", "regex", "words") if k in spec]
    if len(kinds) != 1:
        raise RuleError(f"{where}: give exactly one of detector, regex, words")
    flags = re.IGNORECASE if spec.get("ignore_case") else 0
    detector = validator = None
    if kinds[0] == "detector":
        if spec["detector"] not in DETECTORS:
            raise RuleError(f"{where}: unknown detector {spec['detector']!r}; known: {', '.join(DETECTORS)}")
        detector = DETECTORS[spec["detector"]]
        pattern, validator = re.compile(detector.pattern, flags), detector.validator
    elif kinds[0] == "regex":
        try:
            pattern = re.compile(spec["regex"], flags)
        except (re.error, TypeError) as err:
            raise RuleError(f"{where}: bad regex: {err}") from None
    else:
        pattern = _words_pattern(spec["words"], where, flags)
    replacement = spec.get("replacement", f"[{name.upper()}]")
    return Rule(name, action, pattern, validator, str(replacement), detector)


class RuleSet:
    """An ordered list of rules applied together."""

    def __init__(self, rules: list[Rule]):
        self.rules = list(rules)

    @classmethod
    def from_dicts(cls, specs: list[dict]) -> RuleSet:
        """Compile a profile given as a list of rule dicts."""
        if not isinstance(specs, list):
            raise RuleError("a rule profile must be a list of rules")
        rules = [rule_from_dict(s, i) for i, s in enumerate(specs)]
        names = [r.name for r in rules]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise RuleError(f"rule name {dup!r} used twice")
        return cls(rules)

    @classmethod
    def from_yaml(cls, path: str) -> RuleSet:
        """Read a profile from YAML: a list of rules, or a mapping with a `rules` list."""
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise RuleError(f"{path}: cannot read rule profile: {err}") from None
        if isinstance(data, dict):
            data = data.get("rules")
        try:
            return cls.from_dicts(data)
        except RuleError as err:
            raise RuleError(f"{path}: {err}") from None

    @classmethod
    def default(cls) -> RuleSet:
        """The shipped PII profile (see default_profile)."""
        return cls.from_dicts(default_profile())

    def with_action(self, action: str) -> RuleSet:
        """The same rules, all with one action (prepare maps its pii setting onto the profile this way)."""
        return RuleSet([replace(r, action=action) for r in self.rules])

    def scan(self, text: str) -> list[Match]:
        """All non-overlapping matches, in text order; on overlap the earlier, then longer, then first rule wins."""
        found, digits = [], None
        for order, rule in enumerate(self.rules):
            det = rule.detector
            if det is not None:
                if det.min_digits:
                    if digits is None:  # counted once per text, shared by every digit detector
                        runs = [len(r) for r in _DIGITS.findall(text)]
                        digits = (max(runs, default=0), sum(runs))
                    if digits[0] < det.min_run or digits[1] < det.min_digits:
                        continue
                if det.hint is not None and not det.hint.search(text):
                    continue
            for m in rule.pattern.finditer(text):
                if m.end() > m.start() and (rule.validator is None or rule.validator(m.group())):
                    hit = Match(rule.name, rule.action, m.start(), m.end(), m.group())
                    found.append((hit.start, -hit.end, order, hit))
        found.sort(key=lambda f: f[:3])
        out, last_end = [], -1
        for start, _, _, match in found:
            if start >= last_end:
                out.append(match)
                last_end = match.end
        return out

    def apply(self, text: str) -> Verdict:
        """Scan a text and redact what the redact rules matched."""
        matches = self.scan(text)
        if not any(m.action == "redact" for m in matches):
            return Verdict(text, tuple(matches), any(m.action == "block" for m in matches))
        repl = {r.name: r.replacement for r in self.rules}
        parts, pos = [], 0
        for m in matches:
            if m.action == "redact":
                parts += [text[pos:m.start], repl[m.rule]]
                pos = m.end
        parts.append(text[pos:])
        return Verdict("".join(parts), tuple(matches), any(m.action == "block" for m in matches))
