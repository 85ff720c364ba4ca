"""Stores the service reads per request: the post catalog, the vector index (Milvus) and the seen store."""
