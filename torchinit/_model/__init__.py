"""The walker and the writer: one pass that reads a model (``walk``), and the one writer that carries a
plan out as a transaction (``write``, ``transaction``, ``spectral``). Knows nothing of schemes.
"""
