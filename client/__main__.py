"""`python -m client ...` runs the `lstm-lm` command."""

from client.cli import main

main()
