"""The commands of `lstm-lm`, a module per group: datasets, jobs, models, scorings. Each module's
`register(app)` adds its commands to the application."""
