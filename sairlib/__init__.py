"""SAIR: self-adaptive interleaved visual reasoning (arXiv 2605.14709), re-implemented."""

__version__ = "0.1.0"
