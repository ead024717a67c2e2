"""Dataset families: one module each, the only owner of its family's behaviour (see
family.py for the contract and registry.py for the one registry)."""
