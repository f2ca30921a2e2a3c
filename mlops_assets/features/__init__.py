"""Features: the one feature definition (SQL) and its engines."""
