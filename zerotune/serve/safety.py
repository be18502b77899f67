"""The content filter applied to generated text (serve, and generate/chat through the same class).

It is a thin layer over the rule engine `prepare` scrubs PII with (zerotune.data.rules): a profile of
rules, each blocking, redacting or flagging what it matches. This module adds what generation needs on
top: a streaming filter that never lets a split pattern through, and an audit log of every event that
records which rule fired and a hash of the match but never the matched text itself.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from zerotune.data.rules import DETECTORS, Match, RuleError, RuleSet

BLOCK_NOTICE = "[response withheld by the content filter]"
PII_DETECTORS = ("email", "cn_id", "card", "cn_mobile", "phone")
OFF = ("off", "none", "")


class FilterProfileError(ValueError):
    """A filter profile that cannot be found or read; the message names it."""


def profiles_dir() -> Path:
    """Where the shipped profiles live: configs/filters of the source tree."""
    return Path(__file__).resolve().parents[2] / "configs" / "filters"


def load_rules(profile: str) -> RuleSet:
    """The rules of a profile given by shipped name or YAML path.

    Args:
        profile: "pii", "seed", "strict" (configs/filters/NAME.yaml) or a path to a YAML profile.
    Returns:
        The compiled RuleSet.
    Raises:
        FilterProfileError: unknown name, missing file or an invalid rule.
    """
    path = Path(profile).expanduser()
    if not path.is_file():
        path = profiles_dir() / f"{profile}.yaml"
    if not path.is_file():
        if profile == "pii":
            # An installed wheel may lack configs/; the default must still work there.
            return RuleSet.from_dicts([{"name": d, "detector": d, "action": "redact"} for d in PII_DETECTORS
                                       if d in DETECTORS])
        known = sorted(p.stem for p in profiles_dir().glob("*.yaml"))
        raise FilterProfileError(f"filter profile {profile!r}: no such file, and not a shipped profile "
                                 f"(known: {', '.join(known) or 'none'})")
    try:
        return RuleSet.from_yaml(str(path))
    except RuleError as err:
        raise FilterProfileError(f"filter profile: {err}") from None


@dataclass(frozen=True)
class FilterEvent:
    """One rule firing on one piece of generated text; deliberately without the matched text."""

    rule: str
    action: str
    length: int
    sha256: str


@dataclass(frozen=True)
class FilterResult:
    """Filtered text (the block notice when blocked), whether it was blocked, and what fired."""

    text: str
    blocked: bool
    events: tuple[FilterEvent, ...]


def _event(match: Match) -> FilterEvent:
    digest = hashlib.sha256(match.text.encode("utf-8")).hexdigest()
    return FilterEvent(match.rule, match.action, len(match.text), digest)


class AuditLog:
    """Append-only JSONL of filter events, safe to share between the server's threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def write(self, events: list[FilterEvent] | tuple[FilterEvent, ...], request_id: str) -> None:
        """Append one line per event.

        Args:
            events: what fired.
            request_id: the request (or session) the text belonged to.
        """
        if not events:
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        lines = [json.dumps({"time": now, "request_id": request_id, "rule": e.rule, "action": e.action,
                             "length": e.length, "sha256": e.sha256}) for e in events]
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")


class ContentFilter:
    """A rule profile applied to generated text, with its audit log."""

    def __init__(self, rules: RuleSet, *, audit: AuditLog | None = None, hold_back: int = 64,
                 block_notice: str = BLOCK_NOTICE):
        self.rules = rules
        self.audit = audit
        self.hold_back = hold_back
        self.block_notice = block_notice
        self.replacements = {r.name: r.replacement for r in rules.rules}

    @classmethod
    def from_profile(cls, profile: str | None, *, audit_log: str | Path | None = None,
                     hold_back: int = 64) -> ContentFilter | None:
        """Build a filter from a profile name or path; None when the profile is None or "off".

        Args:
            profile: shipped name, YAML path, or None/"off".
            audit_log: JSONL file for events; None = events are not logged.
            hold_back: characters a stream is held back (longest pattern worth catching across chunks).
        Returns:
            The ContentFilter, or None for no filtering.
        """
        if profile is None or profile.strip().lower() in OFF:
            return None
        return cls(load_rules(profile), audit=AuditLog(audit_log) if audit_log else None, hold_back=hold_back)

    def record(self, matches: list[Match], request_id: str) -> list[FilterEvent]:
        """Turn matches into events and log them."""
        events = [_event(m) for m in matches]
        if self.audit is not None:
            self.audit.write(events, request_id)
        return events

    def filter_text(self, text: str, request_id: str = "-") -> FilterResult:
        """Filter a whole answer.

        Args:
            text: generated text.
            request_id: recorded with the events.
        Returns:
            FilterResult; text is redacted, or the block notice when a block rule fired.
        """
        verdict = self.rules.apply(text)
        events = tuple(self.record(list(verdict.matches), request_id))
        return FilterResult(self.block_notice if verdict.blocked else verdict.text, verdict.blocked, events)

    def stream(self, request_id: str = "-") -> StreamFilter:
        """A filter for one streamed answer."""
        return StreamFilter(self, request_id)


class StreamFilter:
    """Filters an answer arriving in pieces.

    Text is released only once no match can still grow across it: the last `hold_back` characters stay
    pending (a pattern not yet complete there is shorter than the window), and so does any match that
    ends inside that window. Released raw text is kept as left context, so lookbehinds such as
    "not after a digit" see what came before.
    """

    def __init__(self, owner: ContentFilter, request_id: str):
        self.owner = owner
        self.request_id = request_id
        self.blocked = False
        self.events: list[FilterEvent] = []
        self._context = ""
        self._pending = ""

    def feed(self, piece: str) -> str:
        """Take the next piece of the answer; return the text now safe to send (maybe empty)."""
        if self.blocked:
            return ""
        self._pending += piece
        return self._release(final=False)

    def finish(self) -> str:
        """The answer is complete: return whatever was still held back, filtered."""
        if self.blocked:
            return ""
        return self._release(final=True)

    def _cut(self, text: str, start: int, matches: list[Match], final: bool) -> int:
        """Where the released part ends: before the hold-back window and before any match reaching into it."""
        if final:
            return len(text)
        cut = max(start, len(text) - self.owner.hold_back)
        for m in matches:
            if m.start < cut < m.end:
                return max(start, m.start)
        return cut

    def _release(self, final: bool) -> str:
        text = self._context + self._pending
        start = len(self._context)
        matches = self.owner.rules.scan(text)
        cut = self._cut(text, start, matches, final)
        done = [m for m in matches if start < m.end <= cut]
        self.events += self.owner.record(done, self.request_id)
        out, pos = [], start
        for m in done:
            if m.action == "block":
                self.blocked = True
                self._pending = ""
                return "".join(out) + text[pos:max(pos, m.start)] + self.owner.block_notice
            if m.action == "redact":
                out += [text[pos:max(pos, m.start)], self.owner.replacements[m.rule]]
                pos = m.end
        out.append(text[pos:cut])
        self._context = text[:cut][-self.owner.hold_back:]
        self._pending = text[cut:]
        return "".join(out)
