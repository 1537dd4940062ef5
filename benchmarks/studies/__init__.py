"""One-off studies behind a decision or an issue's acceptance; their results, the record, are in ``results/`` here."""
