"""`lstm-lm`, the command-line client of the service. It speaks only HTTP to the API."""
