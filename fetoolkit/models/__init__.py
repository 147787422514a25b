"""Model registry, weights records and the embedder factory."""
