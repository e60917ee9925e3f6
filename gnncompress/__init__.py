"""gnncompress: compress pre-trained GNN checkpoints by distillation."""
__version__ = '0.1.0'
