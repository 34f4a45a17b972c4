"""Kaizen's answering side: the llama.cpp runtime, the LangGraph state machine, conversation threads and the REPL.
Imports store, never eval or cli."""
