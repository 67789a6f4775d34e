"""The benchmark harness (`python -m bench.run --quick|--full`); results go to BENCHMARKS.md."""
