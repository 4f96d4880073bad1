"""Text metrics: BLEU both ways, ROUGE, METEOR, CIDEr-D, BERTScore and Distinct-n behind one ``TextScorer``."""
