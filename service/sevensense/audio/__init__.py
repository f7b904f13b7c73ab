"""Audio in: decode → mono → resample → windows → normalise. Pure, streaming, no model code."""
