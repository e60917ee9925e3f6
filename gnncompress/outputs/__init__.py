"""What a run ships and reports: the ONNX export and its parity check, int8,
latency, the report and the pictures."""
