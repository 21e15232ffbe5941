"""densekit's microbenchmarks: each case is verified against NumPy and torch, then timed
against them, interleaved in one process. Run `python -m bench --help`; see bench/README.md."""
