"""Command-line tools: training (`python -m trainers.fit`), evaluation, export for TF Serving and the λ, h search."""
