"""Load and memory benchmarks: ``python -m bench.proxy`` (``make bench``); see bench/README.md."""
