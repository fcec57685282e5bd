"""Monitors: the QEMU Machine Protocol (`qmp`) and a line-oriented human monitor (`hmp`),
both over the thread-safe command queue of `dispatch`; the commands themselves run in the
main loop (emu.cli.mainloop)."""
