"""Benchmarks of the workset monitor: exact AWS call counts per operation (`python -m benchmarks.aws_calls`)."""
