"""Evaluation reports of trained models."""
