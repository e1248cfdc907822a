"""The HTTP layer. Nothing outside `app.api` and `app.main` imports it."""
