"""Subcommands of the `unlearn-lens` command, one module each with a `register(subparsers)` function."""
