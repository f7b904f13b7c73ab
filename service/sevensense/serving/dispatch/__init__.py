"""One recording's work: window, dispatch chunks to the model paths, reassemble, cross-check."""
