"""RFC 9162 (Certificate Transparency v2) Merkle tree hashing and proofs.

Hashes and proves, nothing else: no storage, no I/O. Proof construction reads
complete-subtree hashes through a `SubtreeSource`, so a stored tree answers any
proof with O(log n) reads. Verification (RFC 9162 §2.1.3.2 and §2.1.4.2) lives in
`ledger.verify`, the standalone verifier, and is re-exported here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

from .verify import (  # verification lives in the standalone verifier
    HASH_SIZE,
    InvalidProof,
    is_power_of_two,
    leaf_hash,
    node_hash,
    root_from_inclusion,
    verify_consistency,
    verify_inclusion,
)

EMPTY_ROOT = hashlib.sha256(b"").digest()


def split_point(n: int) -> int:
    """The largest power of two strictly less than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class SubtreeSource(Protocol):
    """Gives the hash of the complete subtree over leaves [index·2^level, (index+1)·2^level)."""

    def subtree(self, level: int, index: int) -> bytes: ...


class LeafList:
    """A SubtreeSource over leaf hashes held in memory (tests, bundles, small trees)."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.leaves = leaves

    def subtree(self, level: int, index: int) -> bytes:
        start = index << level
        return root_of(self.leaves[start : start + (1 << level)])


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes, RFC 9162 §2.1.1."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = split_point(n)
    return node_hash(root_of(leaves[:k]), root_of(leaves[k:]))


def range_hash(source: SubtreeSource, start: int, end: int) -> bytes:
    """MTH over leaves [start, end), built from complete subtrees.

    Every range met while proving starts at a multiple of its left part's size,
    so each left part is a complete subtree the source holds.
    """
    n = end - start
    if n == 0:
        return EMPTY_ROOT
    if is_power_of_two(n) and start % n == 0:
        return source.subtree(n.bit_length() - 1, start // n)
    k = split_point(n)
    return node_hash(range_hash(source, start, start + k), range_hash(source, start + k, end))


def inclusion_proof(source: SubtreeSource, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]), RFC 9162 §2.1.3.1."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    proof: list[bytes] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = split_point(end - start)
        if m < k:
            proof.append(range_hash(source, start + k, end))
            end = start + k
        else:
            proof.append(range_hash(source, start, start + k))
            start, m = start + k, m - k
    proof.reverse()
    return proof


def consistency_proof(source: SubtreeSource, first: int, second: int) -> list[bytes]:
    """PROOF(first, D[0:second]), RFC 9162 §2.1.4.1; empty when first is 0 or equal."""
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    if first in (0, second):
        return []
    proof: list[bytes] = []
    start, end, m, whole = 0, second, first, True
    while m != end - start:
        k = split_point(end - start)
        if m <= k:
            proof.append(range_hash(source, start + k, end))
            end = start + k
        else:
            proof.append(range_hash(source, start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        proof.append(range_hash(source, start, end))
    proof.reverse()
    return proof


class CompactRange:
    """The right frontier of a growing tree: O(log n) hashes give the root at any size.

    `append` returns the complete subtrees it finished, as (level, index, hash),
    which is what an integrator stores.
    """

    def __init__(self, size: int = 0, frontier: Sequence[bytes] = ()) -> None:
        self.size = size
        self.frontier = list(frontier)  # hashes of complete subtrees, largest first

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        finished = [(0, self.size, leaf)]
        h, level, index = leaf, 0, self.size
        self.frontier.append(leaf)
        while index & 1:
            self.frontier.pop()
            left = self.frontier.pop()
            h = node_hash(left, h)
            level, index = level + 1, index >> 1
            self.frontier.append(h)
            finished.append((level, index, h))
        self.size += 1
        return finished

    def root(self) -> bytes:
        if not self.frontier:
            return EMPTY_ROOT
        h = self.frontier[-1]
        for left in reversed(self.frontier[:-1]):
            h = node_hash(left, h)
        return h


def frontier_positions(size: int) -> list[tuple[int, int]]:
    """(level, index) of the complete subtrees making up a tree of `size`, largest first."""
    out = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size & (1 << level):
            out.append((level, start >> level))
            start += 1 << level
    return out


__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "InvalidProof",
    "LeafList",
    "SubtreeSource",
    "consistency_proof",
    "frontier_positions",
    "inclusion_proof",
    "is_power_of_two",
    "leaf_hash",
    "node_hash",
    "range_hash",
    "root_from_inclusion",
    "root_of",
    "split_point",
    "verify_consistency",
    "verify_inclusion",
]
