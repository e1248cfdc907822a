"""Training jobs: corpora, job configs, submission and state, the queue, the writes of a worker's
attempt, checkpoints and metric history."""
