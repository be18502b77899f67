"""Text cleaning: rules that leave code, JSON and Chinese punctuation intact unless asked otherwise.

Each rule checks cheaply whether it has anything to do before it runs (most texts are already
clean), because cleaning sits on the streaming path that must handle tens of thousands of rows a
second. The seed's keep-only-letters/digits/CJK regex is here as an opt-in rule: it deletes every
brace, quote and operator, so JSON or code answers come out as garbage.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata

from zerotune.config import CleanConfig

# Kept as written by NFKC: full-width punctuation, the ideographic space and the ellipsis are how
# Chinese text is normally punctuated; their width is the punct_width rule's business.
_PROTECTED = re.compile("([\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff60\u3000\u2026]+)")
# C0/C1 controls except tab, newline and carriage return, plus invisible joiners that carry no
# meaning in text. ZWJ/ZWNJ and bidi marks stay: emoji sequences and RTL scripts need them.
_CONTROL_CLASS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u2060-\u2064\ufeff"
_CONTROL = re.compile(f"[{_CONTROL_CLASS}]")
_TRAILING = re.compile("[ \t]+\n")
_BLANKS = re.compile("\n{4,}")
_CODE = re.compile(r"(```.*?```|`[^`\n]+`)", re.S)
_HTML_DOC = re.compile(r"<(?:!doctype|html|head|body|script|style)\b", re.I)
_BREAK = re.compile(r"<br\s*/?>|</(?:p|div|li|tr|h[1-6]|blockquote|pre|table|ul|ol)\s*>", re.I)
_TAG = re.compile(
    r"</?(?:a|abbr|b|blockquote|br|center|code|dd|del|div|dl|dt|em|font|h[1-6]|hr|i|img|ins|li|mark|ol|p|"
    r"pre|s|small|span|strong|sub|sup|table|tbody|td|tfoot|th|thead|tr|u|ul)\b[^<>]*>", re.I)
_ENTITY = re.compile(r"&(?:[a-zA-Z]{2,8}|#\d{1,6}|#x[0-9a-fA-F]{1,5});")
_SEED = re.compile(r"[^\w\s\u4e00-\u9fff]")
_CJK_BEFORE = re.compile(r"(?<=[\u3400-\u9fff])([,.!?:;()])")

_FULL = "！＂＃＄％＆＇（）＊＋，－．／：；＜＝＞？＠［＼］＾＿｀｛｜｝～"
_HALF = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
_TO_HALF = str.maketrans({**dict(zip(_FULL, _HALF)), "。": ".", "、": ",", "【": "[", "】": "]",
                          "“": '"', "”": '"', "‘": "'", "’": "'", "\u3000": " "})
_TO_FULL = {",": "，", ".": "。", "!": "！", "?": "？", ":": "：", ";": "；", "(": "（", ")": "）"}

RULES = ("html", "control_chars", "nfkc", "punct_width", "seed_regex", "whitespace")


@functools.lru_cache(maxsize=1)
def _nfkc_suspect_class() -> str:
    """Characters whose presence means NFKC might change a text (built once, ~0.2 s).

    A text without any of them is left as it is without calling normalize, which on Chinese text
    costs several times more than this search. Suspects: characters NFKC maps elsewhere, combining
    marks, characters that compose with the one before them (second half of a canonical pair,
    Hangul vowel and final jamo), surrogates, and everything outside the BMP. Protected
    punctuation is excluded since nfkc leaves it alone anyway.
    """
    suspects = {*range(0x1161, 0x1176), *range(0x11A8, 0x11C3), *range(0xD800, 0xE000)}
    for cp in range(0x10000):
        if 0xD800 <= cp < 0xE000:
            continue
        c = chr(cp)
        if unicodedata.combining(c) or (unicodedata.normalize("NFKC", c) != c and not _PROTECTED.match(c)):
            suspects.add(cp)
        parts = unicodedata.decomposition(c).split()
        if len(parts) == 2 and not parts[0].startswith("<"):
            suspects.add(int(parts[1], 16))
    ranges, cps = [], sorted(suspects)
    start = prev = cps[0]
    for cp in cps[1:] + [-1]:
        if cp != prev + 1:
            ranges.append(f"\\u{start:04x}" + (f"-\\u{prev:04x}" if prev > start else ""))
            start = cp
        prev = cp
    return "".join(ranges) + "\\U00010000-\\U0010ffff"


@functools.lru_cache(maxsize=1)
def _nfkc_suspects() -> re.Pattern:
    return re.compile(f"[{_nfkc_suspect_class()}]")


def nfkc(text: str) -> str:
    """NFKC normalisation that leaves full-width punctuation as written."""
    if text.isascii() or not _nfkc_suspects().search(text):
        return text
    parts = _PROTECTED.split(text)
    return "".join(p if i % 2 else unicodedata.normalize("NFKC", p) for i, p in enumerate(parts))


def control_chars(text: str) -> str:
    """Drop control and zero-width characters, keeping tab and line breaks."""
    return _CONTROL.sub("", text) if _CONTROL.search(text) else text


def whitespace(text: str) -> str:
    """CRLF to LF, no trailing spaces on lines, at most two blank lines, trimmed ends.

    Runs of spaces inside a line stay: they are indentation in code and alignment in tables.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if " \n" in text or "\t\n" in text:
        text = _TRAILING.sub("\n", text)
    if "\n\n\n\n" in text:
        text = _BLANKS.sub("\n\n\n", text)
    return text.strip()


def _strip_tags(text: str) -> str:
    text = _TAG.sub("", _BREAK.sub("\n", text))
    return _ENTITY.sub(lambda m: html.unescape(m.group()), text)


def strip_html(text: str) -> str:
    """Remove HTML tags and entities outside code spans; whole HTML documents are left alone."""
    if ("<" not in text and "&" not in text) or _HTML_DOC.search(text):
        return text
    parts = _CODE.split(text)
    return "".join(p if i % 2 else _strip_tags(p) for i, p in enumerate(parts))


def punct_half(text: str) -> str:
    """Full-width punctuation (and 。、【】“”) to ASCII."""
    return text if text.isascii() else text.translate(_TO_HALF)


def punct_full(text: str) -> str:
    """ASCII punctuation right after a CJK character to its full-width form."""
    return text if text.isascii() else _CJK_BEFORE.sub(lambda m: _TO_FULL[m.group(1)], text)


def seed_regex(text: str) -> str:
    """The seed's rule: keep only letters, digits, underscores, whitespace and CJK."""
    return _SEED.sub("", text)


class Cleaner:
    """The configured rules in a fixed order, counting what each one changed.

    Attributes:
        changed: per rule, how many texts it changed.
        removed: per rule, net characters it removed.
    """

    def __init__(self, cfg: CleanConfig):
        # html first: the entities it decodes (&nbsp;, &#65313;) are then normalised like any text.
        steps = [("html", strip_html, cfg.html), ("control_chars", control_chars, cfg.control_chars),
                 ("nfkc", nfkc, cfg.nfkc),
                 ("punct_width", punct_half if cfg.punct_width == "half" else punct_full, cfg.punct_width != "keep"),
                 ("seed_regex", seed_regex, cfg.seed_regex), ("whitespace", whitespace, cfg.whitespace)]
        self.steps = [(name, fn) for name, fn, on in steps if on]
        self.changed = dict.fromkeys(RULES, 0)
        self.removed = dict.fromkeys(RULES, 0)
        self._whitespace = cfg.whitespace
        self._suspect = None if cfg.seed_regex else re.compile(f"[{self._suspect_class(cfg)}]")

    @staticmethod
    def _suspect_class(cfg: CleanConfig) -> str:
        """Characters at least one enabled rule acts on (whitespace runs aside); empty class = none."""
        parts = ["<&" if cfg.html else "", _CONTROL_CLASS if cfg.control_chars else "",
                 r"\r" if cfg.whitespace else "", _nfkc_suspect_class() if cfg.nfkc else ""]
        if cfg.punct_width == "half":
            parts.append("".join(re.escape(chr(c)) for c in _TO_HALF))
        elif cfg.punct_width == "full":
            parts.append(re.escape("".join(_TO_FULL)))
        return "".join(parts) or r"\x00"

    def _is_clean(self, text: str) -> bool:
        """Whether no enabled rule would change the text.

        Most texts are already clean; one character-class search and a few substring tests cost a
        fraction of running every rule. The seed regex acts on almost any text, so it gets no shortcut.
        """
        if self._suspect is None or self._suspect.search(text):
            return False
        return not (self._whitespace and (" \n" in text or "\t\n" in text or "\n\n\n\n" in text
                                          or text[:1].isspace() or text[-1:].isspace()))

    def text(self, text: str) -> str:
        """One text through every enabled rule."""
        if self._is_clean(text):
            return text
        for name, fn in self.steps:
            out = fn(text)
            if out is not text and out != text:
                self.changed[name] += 1
                self.removed[name] += len(text) - len(out)
                text = out
        return text

    def messages(self, messages: list[dict]) -> tuple[list[dict], str | None]:
        """Clean every message; also return the field of the first one cleaning left empty, if any.

        Returns:
            The cleaned messages (the same list when nothing changed) and None, or the field path
            (e.g. "messages[1].content") of a message with no text left, which makes the row unusable.
        """
        cleaned = [self.text(m["content"]) for m in messages]
        if not all(cleaned):
            return messages, f"messages[{cleaned.index('')}].content"
        if all(c is m["content"] for c, m in zip(cleaned, messages)):
            return messages, None
        return [{"role": m["role"], "content": c} for m, c in zip(messages, cleaned)], None

    def summary(self) -> dict:
        """Per enabled rule: texts changed and characters removed."""
        return {name: {"texts_changed": self.changed[name], "chars_removed": self.removed[name]}
                for name, _ in self.steps}
