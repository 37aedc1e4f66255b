"""The hand-written receiver's tables: what a project stores when it does without morph_webhooks."""
