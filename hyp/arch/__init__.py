"""ARMv7-A architecture model: what the MMU hardware does (DDI 0406C)."""
