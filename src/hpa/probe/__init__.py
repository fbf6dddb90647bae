"""Frozen-backbone embeddings (``hpa embed``) and the heads fitted on them (``hpa probe``)."""
