"""subind: Subtask Induction for any PyTorch model.

Public API: masks (continuous sparsification), subnetwork discovery, subnetwork transfer and
controls. See README.md for an example on your own model.
"""

__version__ = "0.1.0"
