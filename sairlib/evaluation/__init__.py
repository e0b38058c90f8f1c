"""Benchmark protocols: loaders for the real annotation files and the scoring rules, shared by
the real benchmarks and their mini versions in the shapes world.

    from sairlib.evaluation import geneval, kris, omnicontext
    items = geneval.load("path/to/evaluation_metadata.jsonl")
"""
