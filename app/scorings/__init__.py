"""Scoring jobs: whole texts scored line by line in the background (see `app.scorings.jobs`)."""
