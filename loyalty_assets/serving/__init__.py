"""The online churn-scoring API: the promoted champions behind HTTP, reloaded when the registry changes."""
