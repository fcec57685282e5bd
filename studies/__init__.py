"""Studies run on s2emu (each module is a script: `python studies/<name>.py --help`)."""
