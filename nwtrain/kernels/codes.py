"""Codes every kernel backend shares, kept free of any compiler import so that each backend loads alone.

``RESET_CODES``: the reset mechanism as the kernels take it. The flag bits: one byte per element that the
linear-leak forward leaves for its backward, saying which clamps the gradient passes.
"""

RESET_CODES = {"subtraction": 0, "zero": 1, "none": 2}
SUBTRACTION, ZERO, NO_RESET = RESET_CODES["subtraction"], RESET_CODES["zero"], RESET_CODES["none"]

FIRED, POST_PASSES, PRE_PASSES, LEAKED_PASSES = 1, 2, 4, 8
