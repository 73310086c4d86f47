"""Benchmarks: training (`kmtl bench train`), input pipeline (`kmtl bench data`) and serving (`kmtl bench serve`)."""

from kmtl.bench.serve import bench_serve, format_table

__all__ = ["bench_serve", "format_table"]
