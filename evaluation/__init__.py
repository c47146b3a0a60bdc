"""CoIN inference, scorers, continual-learning metrics and run reports."""
