"""Benchmarks: serving latency and throughput of the exported models (`kmtl bench serve`)."""

from kmtl.bench.serve import bench_serve, format_table

__all__ = ["bench_serve", "format_table"]
