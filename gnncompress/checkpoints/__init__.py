"""Teacher checkpoints: loading them without running code, recognising their
architecture from the weights, and the cards that say how they were trained."""
