"""Model side: encoder resolution, sub-token alignment, the growable tagger and its CRF."""
