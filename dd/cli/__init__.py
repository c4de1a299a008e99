"""Command-line entry points; see dd.cli.main."""
