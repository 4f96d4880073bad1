"""Sticker metrics: image–text and image–image similarity with CLIP or a proxy encoder, and sticker fit."""
