"""The machine: Unicorn runs the guest; the hypervisor and MMU model in hyp/ do the rest."""
