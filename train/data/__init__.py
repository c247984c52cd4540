"""Data for training: catalog datasets and the benchmark and sample generators."""
