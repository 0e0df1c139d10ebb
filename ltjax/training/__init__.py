"""Training machinery: optimisers and schedules, train state and step, devices, checkpoints, logs, loop."""
