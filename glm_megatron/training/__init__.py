"""Training components: gradient sync, optimizer, checkpoints, metrics and the loop."""
