"""Command-line hyper-parameter search over λ and h (`python -m tuning.search`); see `invariance_tf.tuning`."""
