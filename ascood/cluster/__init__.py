"""Running sweeps on a Ray cluster as Ray Jobs (`jobs`); the shared-output checks a cluster sweep
needs live with the sweep engine (`ascood.sweep.shared_output`)."""
