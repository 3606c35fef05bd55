"""Whole commands as a user runs them, checked from the outside."""
