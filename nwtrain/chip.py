"""The chip constants under the names ``nwtrain.layers`` reads them by. They live in the chip modules
(``nwtrain.chips.h1v1``, ``nwtrain.chips.h1v2``); this module only keeps the layers' imports working until
the layers read those modules themselves. New code imports the chip modules."""

from .chips import h1v1, h1v2

H1V1_V_THRESHOLD_V = h1v1.V_THRESHOLD_V
H1V1_WEIGHT_LIMIT_V = h1v1.WEIGHT_LIMIT_V
H1V1_C_MEM_F = h1v1.C_MEM_F
H1V1_PULSE_WIDTH_S = h1v1.PULSE_WIDTH_S
H1V1_CURRENT_UNIT_A = h1v1.CURRENT_UNIT_A
H1V1_SYN_BIAS_CURRENT_A = h1v1.SYN_BIAS_CURRENT_A
H1V1_SYN_LINEAR_RANGE_V = h1v1.SYN_LINEAR_RANGE_V
H1V1_TAU_PROFILES_S = h1v1.TAU_PROFILES_S
H1V1_LEAK_LOGNORMAL_SIGMA = h1v1.LEAK_LOGNORMAL_SIGMA
H1V1_FRONTEND_CHANNELS = h1v1.FRONTEND_CHANNELS
H1V2_V_THRESHOLD_V = h1v2.V_THRESHOLD_V
H1V2_WEIGHT_LIMIT_V = h1v2.WEIGHT_LIMIT_V
H1V2_SYN_GAIN_V = h1v2.SYN_GAIN_V
H1V2_C_MEM_F = h1v2.C_MEM_F
H1V2_TAU_PROFILES_S = h1v2.TAU_PROFILES_S
H1V2_LEAK_LOGNORMAL_SIGMA = h1v2.LEAK_LOGNORMAL_SIGMA
