"""The names of the method's choices, without the math: what configs validate against.

Kept apart from the tensor code so that validating a config (every CLI's bad-input refusal) does
not import torch.
"""

FEATURE_NORMS = ("zscore", "l2", "none")
SYNTHESIS_KINDS = ("gradient", "gradient-subtract", "shuffle", "gaussian")
