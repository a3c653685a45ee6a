"""`logdb` subcommands, one module per group; each offers `register(subparsers)`."""
