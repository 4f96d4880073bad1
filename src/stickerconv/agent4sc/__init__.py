"""Agent4SC: personas and the multi-agent simulator that writes StickerConv conversations."""
