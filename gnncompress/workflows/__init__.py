"""One module per command (distill, train-teacher and inspect, export,
bench) over the shared pieces of a run: its frame (``runs``), what it
reads (``inputs``), the student it builds (``students``) and what it
writes (``results``). :mod:`gnncompress.api` is the short facade over
them; amalgamate and cotrain live in :mod:`gnncompress.workflows.amalgamate` and
:mod:`gnncompress.workflows.cotrain`."""
