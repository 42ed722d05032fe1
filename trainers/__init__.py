"""Command-line tools: training (`python -m trainers.fit`), evaluation and export for TF Serving."""
