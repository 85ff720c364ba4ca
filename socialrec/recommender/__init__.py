"""The recommender: candidate sources, the four stages and their replay on a snapshot."""
