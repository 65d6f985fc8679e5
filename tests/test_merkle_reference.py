"""Our proofs against an independent RFC 9162 verifier written here from the RFC's definitions.

The reference below rebuilds roots by recursing over PATH (§2.1.3.1) and SUBPROOF
(§2.1.4.1) as the RFC defines them, rather than running the iterative algorithms of
§2.1.3.2 and §2.1.4.2 that ledger.merkle uses, so the two can disagree if either is
wrong.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.merkle import LeafList, consistency_proof, inclusion_proof, root_of


def H(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf(i: int) -> bytes:
    return H(b"\x00" + f"leaf {i}".encode())


def k_of(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_inclusion_root(m: int, n: int, leaf_hash: bytes, path: list[bytes]) -> bytes | None:
    """Root implied by PATH(m, D[n]); None if the path has the wrong shape."""
    if n == 1:
        return leaf_hash if not path else None
    if not path:
        return None
    k, last, rest = k_of(n), path[-1], path[:-1]
    if m < k:
        inner = ref_inclusion_root(m, k, leaf_hash, rest)
        return None if inner is None else H(b"\x01" + inner + last)
    inner = ref_inclusion_root(m - k, n - k, leaf_hash, rest)
    return None if inner is None else H(b"\x01" + last + inner)


def ref_consistency_roots(
    m: int, n: int, proof: list[bytes], b: bool, first_root: bytes
) -> tuple[bytes, bytes] | None:
    """(old subroot, new subroot) implied by SUBPROOF(m, D[n], b)."""
    if m == n:
        if b:
            return (first_root, first_root) if not proof else None
        return (proof[0], proof[0]) if len(proof) == 1 else None
    if not proof:
        return None
    k, last, rest = k_of(n), proof[-1], proof[:-1]
    if m <= k:
        inner = ref_consistency_roots(m, k, rest, b, first_root)
        return None if inner is None else (inner[0], H(b"\x01" + inner[1] + last))
    inner = ref_consistency_roots(m - k, n - k, rest, False, first_root)
    if inner is None:
        return None
    return H(b"\x01" + last + inner[0]), H(b"\x01" + last + inner[1])


def ref_consistent(m: int, n: int, proof: list[bytes], r1: bytes, r2: bytes) -> bool:
    if not 0 < m < n:
        return False
    roots = ref_consistency_roots(m, n, proof, True, r1)
    return roots is not None and roots == (r1, r2)


def mutations(proof: list[bytes]) -> list[list[bytes]]:
    out = [proof[:-1], [*proof, proof[0] if proof else b"\x00" * 32], [b"\x00" * 32, *proof]]
    for i, h in enumerate(proof):
        out.append([*proof[:i], bytes([h[0] ^ 1]) + h[1:], *proof[i + 1 :]])
    return [p for p in out if p != proof]


LEAVES = [leaf(i) for i in range(64)]


@pytest.mark.parametrize("size", range(1, 65))
def test_every_inclusion_proof_up_to_64_leaves(size: int) -> None:
    tree = LeafList(LEAVES[:size])
    root = root_of(LEAVES[:size])
    for index in range(size):
        proof = inclusion_proof(tree, index, size)
        assert ref_inclusion_root(index, size, LEAVES[index], proof) == root
        for bad in mutations(proof):
            assert ref_inclusion_root(index, size, LEAVES[index], bad) != root
        if size > 1:  # the same proof does not prove another leaf
            assert ref_inclusion_root(index, size, LEAVES[(index + 1) % size], proof) != root


@pytest.mark.parametrize("second", range(2, 65))
def test_every_consistency_proof_up_to_64_leaves(second: int) -> None:
    tree = LeafList(LEAVES[:second])
    r2 = root_of(LEAVES[:second])
    for first in range(1, second):
        r1 = root_of(LEAVES[:first])
        proof = consistency_proof(tree, first, second)
        assert ref_consistent(first, second, proof, r1, r2)
        for bad in mutations(proof):
            assert not ref_consistent(first, second, bad, r1, r2)


@settings(max_examples=40, deadline=None)
@given(size=st.integers(65, 5000), data=st.data())
def test_random_larger_trees(size: int, data: st.DataObject) -> None:
    leaves = [leaf(i) for i in range(size)]
    tree, root = LeafList(leaves), root_of(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof = inclusion_proof(tree, index, size)
    assert ref_inclusion_root(index, size, leaves[index], proof) == root
    first = data.draw(st.integers(1, size - 1))
    c = consistency_proof(tree, first, size)
    assert ref_consistent(first, size, c, root_of(leaves[:first]), root)
    for bad in mutations(c)[:3]:
        assert not ref_consistent(first, size, bad, root_of(leaves[:first]), root)
