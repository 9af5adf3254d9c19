"""Face recognition: embeddings, galleries, verification and identification."""
