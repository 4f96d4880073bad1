"""Dataset tools: load, validate, describe, split and convert StickerConv conversations.

The published dataset (NEUDM/StickerConv) and the sessions our Agent4SC simulator writes share one
record format (method reference §4.3), so both go through the same modules here: ``io`` reads every
file form with record locations, ``validate`` is the strict path, ``stats``/``plots``/``report``
describe a dataset, ``split`` makes persona-disjoint splits, and ``samples``/``chat``/``hf`` turn
conversations into training data. ``hub`` fetches the published files.
"""
