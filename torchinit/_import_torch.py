"""Import torch without its "Failed to initialize NumPy" UserWarning (torch ships without NumPy and warns at
import when it is absent; torchinit never uses NumPy). The package imports this module first."""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy", category=UserWarning)
    import torch as torch
