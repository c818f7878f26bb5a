"""The procedural micro/macro-expression data sets written in the official layouts."""
