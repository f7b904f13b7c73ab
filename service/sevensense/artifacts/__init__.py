"""Versioned model artifacts: manifests, the local registry, labels, import and pull."""
