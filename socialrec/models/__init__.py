"""Models: the two-tower retrieval model, the multi-outcome ranker, co-engagement neighbours, the model registry (MLflow) and their offline metrics."""
