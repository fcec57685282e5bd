"""Debugging a guest: single steps, traces, Perfetto export, the GDB remote stub."""
