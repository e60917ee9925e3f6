"""Regimes: what varies between training runs (how an epoch splits into
steps, the forward call, the label loss, how teachers' outputs are cut to a
step, how validation is scored), each a small object the one loop runs."""
