"""An Ollama Modelfile for an exported GGUF: the run's chat format as an Ollama (Go text/template)
TEMPLATE, its system prompt, and stop tokens.

Chat templates are Jinja programs, so rather than parse one, the template is rendered on sentinel
messages and cut at the sentinels. That yields each role's text before and after its content, which
is all a turn-based format (ChatML, Llama 3, DeepSeek, SmolLM with its default system line) is made of,
and those pieces are written back out in Go-template syntax.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_S, _U1, _A1, _U2, _BOS = "ZtSystemZt", "ZtUserOneZt", "ZtAnswerZt", "ZtUserTwoZt", "ZtBosZt"


@dataclass(frozen=True)
class TurnPieces:
    """The literal text around each message that a chat template writes."""

    head: str  # written once before everything (a BOS the template spells out)
    system_start: str
    system_end: str
    default_system: str  # the whole system block the template writes when there is no system message
    user_start: str
    user_end: str
    assistant_start: str
    assistant_end: str
    generation: str  # what add_generation_prompt appends


def _render(tokenizer, template: str, messages: list[dict], add_generation_prompt: bool) -> str:
    # bos_token is replaced by a sentinel too, so a BOS the template writes as a variable can be told
    # apart from the same text written literally (SmolLM's BOS is "<|im_start|>", which ChatML also
    # writes at the start of every turn)
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                         add_generation_prompt=add_generation_prompt, bos_token=_BOS)


def _cut(text: str, marks: list[str]) -> list[str] | None:
    """text split at each mark in order, or None when a mark is missing or repeated."""
    if any(text.count(m) != 1 for m in marks):
        return None
    pieces = []
    for mark in marks:
        before, text = text.split(mark)
        pieces.append(before)
    return pieces + [text]


def _strip(text: str, prefix: str = "", suffix: str = "") -> str | None:
    """text without prefix and suffix, or None when it does not have them."""
    if not text.startswith(prefix) or not text.endswith(suffix) or len(text) < len(prefix) + len(suffix):
        return None
    return text[len(prefix):len(text) - len(suffix)]


def turn_pieces(tokenizer, template: str) -> TurnPieces | None:
    """Decompose a chat template into per-role text pieces.

    Args:
        tokenizer: supplies bos_token and friends to the template.
        template: the Jinja chat template.
    Returns:
        The pieces, or None when the template does not render turns that way (it rejects a system
        message, rewrites content, or renders history differently from the last turn).
    """
    s, u1, a1, u2 = ({"role": r, "content": c} for r, c in
                     (("system", _S), ("user", _U1), ("assistant", _A1), ("user", _U2)))
    try:
        full = _render(tokenizer, template, [s, u1, a1, u2], False)
        with_prompt = _render(tokenizer, template, [s, u1, a1, u2], True)
        closed = _render(tokenizer, template, [s, u1, a1], False)
        no_system = _render(tokenizer, template, [u1, a1, u2], False)
    except Exception:  # a template may raise on anything (e.g. "system role not supported")
        return None
    cut, cut_closed = _cut(full, [_S, _U1, _A1, _U2]), _cut(closed, [_S, _U1, _A1])
    generation = _strip(with_prompt, full)
    if cut is None or cut_closed is None or generation is None or cut_closed[:3] != cut[:3]:
        return None
    before_s, s_to_u1, u1_to_a1, a1_to_u2, user_end = cut
    assistant_end = cut_closed[3]
    assistant_start = _strip(u1_to_a1, user_end)
    user_start = _strip(a1_to_u2, assistant_end)
    system_end = _strip(s_to_u1, "", user_start or "")
    head = _BOS if before_s.startswith(_BOS) else ""
    before_u1 = (_cut(no_system, [_U1, _A1, _U2]) or [None])[0]
    default_system = _strip(before_u1, head, user_start or "") if before_u1 is not None else None
    parts = [head, before_s[len(head):], system_end, default_system, user_start, user_end, assistant_start,
             assistant_end, generation]
    if any(p is None for p in parts):
        return None
    bos = getattr(tokenizer, "bos_token", None) or ""
    return TurnPieces(*(p.replace(_BOS, bos) for p in parts))


def _go(text: str) -> str:
    """Literal text inside a Go template ("{{" would open an action)."""
    return text.replace("{{", '{{ "{{" }}')


def ollama_template(pieces: TurnPieces, runtime_adds_bos: bool) -> str:
    """The Go text/template Ollama renders conversations with, written without whitespace trimming.

    Args:
        pieces: from turn_pieces.
        runtime_adds_bos: llama.cpp adds BOS itself (tokenizer.ggml.add_bos_token), so a BOS the
            Jinja template spells out is left out here rather than doubled.
    Returns:
        The template text (one line per construct would need `{{-`, which would also eat newlines
        that belong to the format, so there is no layout whitespace at all).
    """
    p = pieces
    head = "" if runtime_adds_bos else _go(p.head)
    system = "{{ if .System }}" + _go(p.system_start) + "{{ .System }}" + _go(p.system_end)
    if p.default_system:
        system += "{{ else }}" + _go(p.default_system)
    turns = ("{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
             '{{ if eq .Role "user" }}' + _go(p.user_start) + "{{ .Content }}" + _go(p.user_end) +
             '{{ else if eq .Role "assistant" }}' + _go(p.assistant_start) + "{{ .Content }}"
             "{{ if not $last }}" + _go(p.assistant_end) + "{{ end }}{{ end }}"
             '{{ if and $last (ne .Role "assistant") }}' + _go(p.generation) + "{{ end }}{{ end }}")
    return head + system + "{{ end }}" + turns


def _stops(tokenizer, manifest: dict) -> list[str]:
    from zerotune.models.templates import TemplateError, resolve_format

    stops = [manifest.get("end_of_turn")]
    if not stops[0] and tokenizer.chat_template:
        try:
            stops = [resolve_format(tokenizer, "model").end_of_turn]
        except TemplateError:
            stops = []
    return list(dict.fromkeys(s for s in stops + [tokenizer.eos_token] if s))


def _quoted(text: str) -> str | None:
    return None if '"""' in text else f'"""{text}"""'


def modelfile_text(gguf_file: str, tokenizer, manifest: dict, add_bos: bool) -> str:
    """The Modelfile for one GGUF file of a merged model.

    Args:
        gguf_file: the .gguf file name, beside the Modelfile.
        tokenizer: the merged model's tokenizer (its chat_template is the run's format).
        manifest: the merged folder's zerotune.json (system_prompt, end_of_turn, run_dir), or {}.
        add_bos: whether the GGUF tells llama.cpp to add BOS.
    Returns:
        The Modelfile text.
    """
    lines = [f"# Exported by zerotune from {manifest.get('run_dir') or 'a merged model'}.",
             "# Create the Ollama model with: ollama create NAME -f Modelfile", f"FROM ./{gguf_file}", ""]
    pieces = turn_pieces(tokenizer, tokenizer.chat_template) if tokenizer.chat_template else None
    template = _quoted(ollama_template(pieces, add_bos)) if pieces else None
    if template:
        lines.append(f"TEMPLATE {template}")
    else:
        lines.append("# No TEMPLATE: the chat template could not be translated; Ollama falls back to the "
                     "GGUF's tokenizer.chat_template.")
    system = _quoted(manifest["system_prompt"]) if manifest.get("system_prompt") else None
    if system:
        lines.append(f"SYSTEM {system}")
    lines += [f'PARAMETER stop "{s}"' for s in _stops(tokenizer, manifest) if '"' not in s]
    return "\n".join(lines) + "\n"


def write_modelfile(path: Path, gguf_file: str, tokenizer, manifest: dict, add_bos: bool) -> None:
    """Write an Ollama Modelfile (see modelfile_text) to path."""
    Path(path).write_text(modelfile_text(gguf_file, tokenizer, manifest, add_bos), encoding="utf-8")
