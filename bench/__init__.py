"""Load generator and benchmarks: `make bench` or `python -m bench --help`."""
