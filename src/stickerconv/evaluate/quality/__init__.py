"""Dataset quality: the figures a generated dataset is judged by, and their markdown report."""
