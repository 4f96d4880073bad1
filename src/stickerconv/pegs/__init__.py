"""PEGS: perceive stickers, decide when to send one, retrieve or generate it (method reference §5)."""
