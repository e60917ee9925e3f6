"""What a model learns and from which data: one module per kind of task (node
classification on one graph, graph classification, inductive node
classification over several graphs, point clouds), each loading its datasets
as a :class:`~gnncompress.core.graph.Graph` with its splits."""
