"""Training of molsym potentials (datasets, losses, loop, CLI)."""
