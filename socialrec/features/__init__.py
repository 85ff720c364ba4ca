"""Features: the Feast feature tables and store, the ranking features and the text encoder."""
