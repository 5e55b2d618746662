"""Layer 1, data: files -> decoded, labelled uint8 arrays (decode and fit, damage, augmentation, folders and
archives, source groups, the decode cache, splits, aligned pairs). Imports nothing else of SynthCheck."""
