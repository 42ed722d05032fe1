"""What the benchmarks share, one job a module.

- `protocols`: the paper's rows, the scales' flags and the config of every run;
- `runs`: run bookkeeping (finished runs skipped, unfinished ones resumed, stale ones refused, machine records);
- `landscapes`: a finished run's accuracy per grid transformation (landscape.json);
- `tables`: the paper's table (results.json's rows, table.md) and CSV files;
- `publishing`: git commits of the finished runs' records (`--commit`) and copies in docs/results;
- `timing`: clocks, medians and timed training steps of the throughput benchmarks;
- `cli`: a benchmark's flags from its options dataclass, checked.
"""
