"""Serving a trained classifier: the exported model, prediction, and Grad-CAM."""
