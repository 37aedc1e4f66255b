"""Records every morph_webhooks signal, so the soak test can count them (see ``soak/run.py``)."""
