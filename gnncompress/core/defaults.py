"""Defaults the command line shows in its help, kept free of torch so that
``gnncompress --help`` answers without importing it. The modules that use
them import them from here."""

# distill: the student has this many times fewer parameters than its
# teacher unless --student/--hidden say otherwise.
DEFAULT_RATIO = 10.0
# Reports (distill, amalgamate, cotrain) spend about this long on all their
# latency figures together (--latency-budget-s).
REPORT_BUDGET_S = 3.0
# amalgamate: the widths a slimmable student trains at (--widths).
DEFAULT_WIDTHS = (0.25, 0.5, 0.75, 1.0)
# GNN teachers are megabytes; the largest of PyG's examples a few hundred.
# A larger file is refused before it is read (--max-checkpoint-gb).
DEFAULT_MAX_CHECKPOINT_GB = 2.0
# Seconds one bench row (model x runtime x threads) may take, warm-up
# included: an ONNX file may hold a Loop that never ends (--row-budget-s).
DEFAULT_ROW_BUDGET_S = 300.0
# --split of train-teacher and distill: 'default' keeps a dataset's own
# masks (Planetoid's public split) or draws a stratified 20/30 per class;
# 'glnn' is the setting of GLNN (Zhang et al., ICLR 2022) and the
# GNN-to-MLP papers after it (gnncompress.tasks.datasets.glnn_split).
SPLITS = ('default', 'glnn')
