"""Persistence: the engine and sessions, the tables, migrations and keyset pagination."""
