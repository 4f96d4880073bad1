"""Retrieval protocols (1+9, 1+999, full pool), the seen/unseen split, send decisions and their scorers."""
