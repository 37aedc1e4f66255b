"""The Morph models this app mirrors: one module each, listed in :mod:`.registry`."""
