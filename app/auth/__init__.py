"""API keys and who may see what: scopes, hashed keys, ownership rules and per-key quotas.

The core of authentication; the HTTP layer (`app.api.auth`) reads the key from a request and
calls into here. Nothing here speaks HTTP.
"""
