"""Objectives: the losses of one step of the loop, where they are more
than the default label + method loss (peers that learn from each other)."""
