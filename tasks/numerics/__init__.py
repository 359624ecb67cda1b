"""Numerics: the FPGA stage in each numeric format (int8, ms-fp8, ms-fp9), gated against fp32."""
