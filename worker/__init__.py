"""The training worker: `python -m worker` claims queued jobs and trains them with `model/`."""
