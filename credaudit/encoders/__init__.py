"""Feature sources: the encoder interface, the registry, and the embedding cache."""
