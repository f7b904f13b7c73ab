"""Archives already in object storage: every audio object under a prefix (or in an S3
Inventory) enqueued for the batch worker, skipping what its done records say is done."""
