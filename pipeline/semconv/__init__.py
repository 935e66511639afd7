"""Instrumentation conventions we read: span kinds, LLM calls, agent names, loose values."""
