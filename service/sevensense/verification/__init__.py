"""Cross-validation of a model's species scores against BirdNET v2.4 (ADR-007 §7)."""
