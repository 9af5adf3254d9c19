"""Exporting trained models: SavedModel and TFLite."""
