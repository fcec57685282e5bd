"""Getting a guest into the machine: the ELF loader."""
