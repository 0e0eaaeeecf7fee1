"""Running sweeps on a Ray cluster: shared outputs (`storage`) and Ray Jobs (`jobs`)."""
