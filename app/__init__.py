"""The training-job service: settings, persistence and the HTTP layer (`app.api`, `app.main`)."""
