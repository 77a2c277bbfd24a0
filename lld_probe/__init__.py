"""lld_probe: diagnostics for likelihood dynamics in GRPO training (Lazy Likelihood Displacement, NTHR).

See README.md. Paper: arXiv:2505.18830.
"""

__version__ = "0.1.0"
