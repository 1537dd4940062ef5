"""One-off studies behind a decision or an issue's acceptance; their results stay in ../results/."""
