"""`python -m zerotune` runs the CLI."""

from zerotune.cli import run

run()
