"""MA2MI pre-training on macro-expression video: state, step, diagnostics, the training job."""
