"""Mutation testing of the modules that decide what is deleted (see check.py)."""
