"""Content addresses of full KV blocks: the key prefix caching shares blocks by. CPU only.

The hash of block i of a sequence is BLAKE2b (16-byte digest) over the hash of block i-1 (empty
for block 0) followed by block i's token ids as little-endian int32. A block's hash therefore
names its tokens and every token before it: two sequences get equal hashes for block i exactly
when their first (i + 1) * block_size tokens are equal, save for a collision of a 128-bit hash
(about n^2 / 2^129 for n distinct blocks ever hashed: below 1e-20 for a trillion blocks), which
is neglected. The KV of a block depends on those tokens alone (positions follow from the index),
so equal hashes mean interchangeable KV for one model.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence

HASH_BYTES = 16  # digest size; the index stores this many bytes per cached block (plus object overhead)


def extend_block_hashes(hashes: list[bytes], token_ids: Sequence[int], block_size: int) -> None:
    """Append the hashes of the blocks `token_ids` holds: the tokens of blocks len(hashes),
    len(hashes) + 1, ... of a sequence whose earlier blocks' hashes `hashes` holds, a whole number
    of blocks (a partial tail is ignored). Mutates `hashes` only. Token ids must fit int32."""
    data = array("i", token_ids[:len(token_ids) - len(token_ids) % block_size]).tobytes()
    width = block_size * 4
    parent = hashes[-1] if hashes else b""
    blake2b = hashlib.blake2b
    for offset in range(0, len(data), width):
        parent = blake2b(parent + data[offset:offset + width], digest_size=HASH_BYTES).digest()
        hashes.append(parent)
