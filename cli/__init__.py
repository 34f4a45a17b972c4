"""`kaizen`, the command line: the one package that sees store, agent and eval. It parses, calls plain
functions that return data, and prints (tables for people, `--json` for programs)."""
