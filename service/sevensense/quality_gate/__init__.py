"""ADR-007 Appendix B, the embedding-quality checklist: the command and the rollout gate."""
