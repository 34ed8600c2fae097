"""Settlement of offline transaction batches (TAC verification, clearing)."""
