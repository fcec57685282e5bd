"""Pure-Python hypervisor and ARMv7 architecture model (never imports Unicorn)."""
