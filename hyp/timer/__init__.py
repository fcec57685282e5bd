"""Guest-visible time sources on the machine's virtual time: the Generic Timer's physical
counter and timer (arch_timer) and the PMU cycle counter (pmu)."""
