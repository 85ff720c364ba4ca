"""The log and the warehouse: landing files, the landing cursor, the warehouse reads, the demo generator, the importers and the in-memory event log."""
