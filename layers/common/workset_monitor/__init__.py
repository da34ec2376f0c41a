"""The workset monitor's domain: models, the state table, the folder layout, the store and the scheduling policy."""
