"""StickerConv: multimodal empathetic dialogue with stickers."""

__version__ = "0.1.0"
