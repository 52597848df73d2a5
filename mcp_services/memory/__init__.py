"""The memory MCP service: per-user memory items (store, history, search, delete).

Reached by the core only over MCP; imports nothing from workspaces, streaming or the outbox."""

import os

# Before numpy loads (its OpenBLAS reads this once): a search is one matrix-vector product per
# request thread, and BLAS threads of its own only compete with the other requests. Measured on 2
# busy cores: 100,000 x 256 took 12 ms with OpenBLAS's threads, 6.6 ms with one.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
