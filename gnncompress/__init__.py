"""gnncompress: compress pre-trained GNN checkpoints by distillation."""
import os

__version__ = '0.1.0'

# MKL (torch's CPU BLAS and sparse kernels) chooses its code paths at run
# time and, left to itself, one training gave other numbers depending on
# what ran before it in the process: a Computers teacher scored 84.56
# alone and 80.77 after another seed's (docs/BENCHMARKS.md, "Teacher
# recipes"). AUTO keeps the path MKL picks for this CPU and makes its
# results repeatable. MKL reads the variable on its first call, so this
# holds when gnncompress is imported before any MKL work; a value the user
# set wins.
os.environ.setdefault('MKL_CBWR', 'AUTO')
