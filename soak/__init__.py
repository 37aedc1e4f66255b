"""A soak test of the example project under gunicorn on PostgreSQL: ``python soak/run.py``."""
