"""LLM judges (empathy, consistency, ranking), the EPITOME classifier and judge-agreement statistics."""
