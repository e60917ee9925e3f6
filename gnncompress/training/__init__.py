"""Training: the one loop (:func:`gnncompress.training.loop.fit`), model
selection, and the regimes (how an epoch splits into steps) it runs."""
