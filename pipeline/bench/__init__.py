"""Benchmark logic (the `mgtc bench ...` commands in jobs/ are thin CLIs over it)."""
