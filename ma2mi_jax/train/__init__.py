"""Training loops: MA2MI pre-training and cross-validated fine-tuning."""
