"""Trigram indexes for the admin's substring searches on PostgreSQL (nothing elsewhere).

The admin searches names, emails and titles with ``icontains``, which PostgreSQL answers by
reading every row: more than a second on a mirror of millions. A trigram GIN index on the
expression ``icontains`` compiles to answers it from the index. The indexes are built
``CONCURRENTLY``, which PostgreSQL refuses inside a transaction: the migration is not atomic.
"""

from django.db import migrations

from ._operations import AddTrigramIndexConcurrently, CreateTrigramExtension

SEARCHED = [
    ("opportunity", "name", "morph_opp_name_trgm"),
    ("engagement", "title", "morph_engagement_title_trgm"),
    ("company", "name", "morph_company_name_trgm"),
    ("contact", "first_name", "morph_contact_first_name_trgm"),
    ("contact", "last_name", "morph_contact_last_name_trgm"),
    ("contact", "email", "morph_contact_email_trgm"),
]


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("morph_webhooks", "0013_relations"),
    ]

    operations = [
        CreateTrigramExtension(),
        *(
            AddTrigramIndexConcurrently(model_name=model, column=column, name=name)
            for model, column, name in SEARCHED
        ),
    ]
