"""`python -m bench.cli`: the same entry point as `bench`."""

from bench.cli import main

main()
