"""Benchmark reports: records -> rows (``rows``), Markdown (``markdown``), PNG charts (``charts``,
needs matplotlib), written together by ``writer.write_report``. Torch-free.
"""
