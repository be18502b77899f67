"""Exact and near-duplicate detection over canonical rows.

Exact dedup keeps a 16-byte blake2b digest per distinct row rather than the text, so a million rows
cost tens of megabytes. Near dedup uses MinHash over character 5-grams with LSH from datasketch:
character shingles work for Chinese (no spaces) as well as for English, and LSH finds candidates
without comparing every pair.
"""

from __future__ import annotations

import re
import zlib
from hashlib import blake2b

_SPACES = re.compile(r"\s+")


def row_digest(messages: list[dict]) -> bytes:
    """16-byte digest of a conversation: same roles and texts in the same order, same digest."""
    text = "\x1e".join([f"{m['role']}\x1f{m['content']}" for m in messages])
    return blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class ExactDedup(dict):
    """Maps each distinct row's digest to the index of the row that first had it.

    A dict subclass whose two operations are the dict's own C methods: they run once per input row.
    """

    first = dict.get  # digest -> index of the earlier identical row, or None
    add = dict.setdefault  # (digest, index): record a new row; an existing digest keeps its first index


def shingle_text(messages: list[dict]) -> str:
    """The text near dedup compares: every message, lower-cased, whitespace collapsed."""
    return _SPACES.sub(" ", " ".join(m["content"] for m in messages)).lower().strip()


class NearDedup:
    """MinHash/LSH index that answers "is this row nearly the same as one added before?".

    Args:
        threshold: estimated Jaccard similarity of 5-gram sets at or above which rows are duplicates.
        num_perm: MinHash permutations; 128 keeps the estimate within a few percent.
        ngram: shingle length in characters.
    """

    def __init__(self, threshold: float = 0.9, num_perm: int = 128, ngram: int = 5):
        from datasketch import MinHash, MinHashLSH  # not needed by exact dedup (or prepare's worker processes)

        self._minhash = MinHash
        self.threshold, self.num_perm, self.ngram = threshold, num_perm, ngram
        # LSH only proposes candidates; each is then checked against the real threshold. Asking it
        # for a lower similarity catches pairs just above the threshold that banding would miss,
        # and keeps at least two bands (datasketch refuses thresholds near 1).
        self._lsh = MinHashLSH(threshold=min(max(threshold - 0.1, 0.1), 0.85), num_perm=num_perm)
        # Permutations are drawn once: building them per MinHash would dominate the run time. crc32
        # (C, stable across runs) hashes the shingles several times faster than the default sha1.
        self._template = MinHash(num_perm=num_perm, seed=1, hashfunc=zlib.crc32)
        self._sigs: dict = {}

    def signature(self, text: str):
        """MinHash of a text's character n-grams (the whole text when shorter than n)."""
        n = self.ngram
        grams = {text[i:i + n] for i in range(max(1, len(text) - n + 1))}
        sig = self._minhash(num_perm=self.num_perm, permutations=self._template.permutations,
                      scheme=self._template.scheme, hashfunc=zlib.crc32)
        sig.update_batch([g.encode("utf-8", "surrogatepass") for g in grams])
        return sig

    def find(self, sig) -> int | None:
        """The lowest key of an added row at or above the threshold, or None."""
        hits = [k for k in self._lsh.query(sig) if self._sigs[k].jaccard(sig) >= self.threshold]
        return min(hits) if hits else None

    def add(self, key: int, messages: list[dict]) -> int | None:
        """Check a row against those added so far; keep it in the index only when it is new.

        Returns:
            The key of the earlier near-identical row, or None (the row was added).
        """
        sig = self.signature(shingle_text(messages))
        dup = self.find(sig)
        if dup is None:
            self._lsh.insert(key, sig)
            self._sigs[key] = sig
        return dup

    def check(self, messages: list[dict]) -> int | None:
        """Like add, but never adds (used for augmented rows against the originals)."""
        return self.find(self.signature(shingle_text(messages)))
