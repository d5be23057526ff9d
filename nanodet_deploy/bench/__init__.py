"""Benchmarks: what to measure (``spec``), measuring it in isolated processes (``harness`` +
``worker``), the records they produce (``records``, ``meta``) and records imported from other
tools (``importers``: benchncnn output, CSV). Torch-free: runs where only the runtime side is
installed.
"""
