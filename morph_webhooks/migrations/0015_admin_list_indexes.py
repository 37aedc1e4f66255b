"""The indexes the admin's lists need on big tables: the request log's filter by HTTP status, and
each big mirror's order and connection filter, which otherwise sort the whole table per page.

Built CONCURRENTLY on PostgreSQL (the tables stay writable while they build), which cannot run in
a transaction: the migration is not atomic.
"""

from django.db import migrations, models

from ._operations import AddIndexConcurrently


def by_update(model_name, prefix):
    return AddIndexConcurrently(
        model_name=model_name,
        index=models.Index(fields=["remote_updated_at"], name=f"{prefix}_updated_idx"),
    )


def by_connection(model_name, prefix):
    return AddIndexConcurrently(
        model_name=model_name,
        index=models.Index(
            fields=["connector_id", "owner_id", "remote_updated_at"], name=f"{prefix}_conn_updated_idx"
        ),
    )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("morph_webhooks", "0014_trigram_search_indexes"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="webhookdelivery",
            index=models.Index(
                condition=models.Q(("http_status", 200), _negated=True),
                fields=["http_status", "received_at"],
                name="morph_delivery_http_status_idx",
            ),
        ),
        by_update("company", "morph_company"),
        by_connection("company", "morph_company"),
        by_update("contact", "morph_contact"),
        by_connection("contact", "morph_contact"),
        by_update("engagement", "morph_eng"),
        by_connection("engagement", "morph_eng"),
        by_connection("opportunity", "morph_opp"),
    ]
