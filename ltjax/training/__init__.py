"""Training machinery: optimisers and schedules (optim), train state and steps (step), a method's phases
resolved against a config (phases), the loop's data interface (feed), devices and sharding (devices),
checkpoints, logs, the Experiment built from a config (experiment) and the loop over phases (loop)."""
