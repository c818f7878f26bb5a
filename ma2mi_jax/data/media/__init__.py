"""Media on disk: frame folders and videos, decoding, the face crop."""
