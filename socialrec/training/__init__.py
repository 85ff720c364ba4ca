"""Training procedures: the two-tower and neighbours (selected on validation) and the ranker on replayed requests."""
