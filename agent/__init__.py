"""Kaizen's answering side: the llama.cpp runtime, the LangGraph state machine, the REPL and the CLI."""
