"""Process groups, device selection, parallel RNG and tensor sharding rules."""
