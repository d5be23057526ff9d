"""Command-line interface (``cli.main``): thin typer wrappers over the Python API (``api.py``),
the only package that wires everything together; nothing imports it."""
