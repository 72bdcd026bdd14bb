"""Quality flags on explanations: what looks wrong with one (flags.py, per row, at commit time) and what only the
whole lake shows (lakepass.py: template texts and low-norm inputs, after a run's commits). No Ray."""
