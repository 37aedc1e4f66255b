"""An example app that listens to morph_webhooks' signals and keeps each opportunity's stage history."""
