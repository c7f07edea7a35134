"""Benchmarks against peers (not tests). Each module is a script (`python bench/NAME.py` or `python -m bench.NAME`);
`bench.nanogpt` is the nanoGPT reference that `bench/train.py` runs and `tests/test_bench.py` checks the book against."""
