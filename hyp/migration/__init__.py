"""Live migration over the dirty log: the stream format (`stream`), vCPU and device state
(`state`), RAM checksums (`checksum`), the source's pre-copy (`precopy`) and the
destination's side (`incoming`). Pure Python: the machine (emu.migration) supplies the vCPU
registers and builds the destination's board."""
