"""Who may call: hashed API keys, scopes, per-key token buckets, and admission of a request."""
