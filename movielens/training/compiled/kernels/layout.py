"""How the kernels cut their work, and the fast-math flags they compile with.

Results depend neither on the number of threads nor on whether Numba compiled the code or loaded
it from its cache: a batch is cut into CHUNKS fixed parts, each summing into its own buffers, and
the tables' rows into BLOCKS fixed blocks, their partial sums added in order.
"""

from __future__ import annotations

from numba import njit

CHUNKS = 2  # parts of a batch whose row gradients are summed apart, in parallel
assert CHUNKS == 2, "adam._adam_rows reads the two chunks' gradients by name"
BLOCKS = 64  # blocks of table rows that Adam updates in parallel
# Fast-math flags that let LLVM vectorise the row loops (reassociating the dot product) but keep
# NaN and infinity meaningful, so that a diverging run is still seen as one.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


@njit(cache=True, nogil=True, inline="always")
def rows_per_block(rows):
    return (rows + BLOCKS - 1) // BLOCKS
