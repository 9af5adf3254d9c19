"""Figures of a model's outputs that need no model: verification and identification of embeddings.

Pure numpy, on the floor of models and data, so a task's callback (the face
embedding task's validation EER) and the face commands measure alike.
"""
