"""The `ris` command: argument parsing and the commands built on the client library."""
