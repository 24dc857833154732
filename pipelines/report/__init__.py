"""What a run tells afterwards: the HTML report and summary.json, and the text printed after a run."""
