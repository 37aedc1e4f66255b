"""Relations within a connection (see morph_webhooks.resources.relations and .links).

Every mirrored resource gets its ``ref``, each reference column the ref it names (``stage_ref``),
and each list the table of its pairs, all filled from what is stored. On a big table this runs
without stopping the endpoint for long: the columns are added empty (no rewrite), filled in
batches of BATCH rows each committed on its own (a batch's rows are locked only while it runs),
and their indexes built concurrently on PostgreSQL. Rows the endpoint writes meanwhile get their
refs and pairs from the app itself, as long as it runs the code this migration goes with.

Reversed, the columns and tables go: the Morph ids they were computed from stay where they were.
"""

import django.db.models.deletion
from django.db import migrations, models, transaction

import morph_webhooks.resources.relations
from morph_webhooks.resources.relations import SQL_REF

from ._operations import AddIndexConcurrently, AddUniqueConstraintConcurrently

BATCH = 10_000

MIRRORED = ["company", "contact", "crmuser", "engagement", "opportunity", "pipeline", "stage", "workspace"]

# model -> (ref column, the Morph id column it is computed from)
REFS = {
    **{model: [("ref", "remote_id")] for model in MIRRORED},
}
REFS["opportunity"] += [
    ("stage_ref", "stage_id"),
    ("pipeline_ref", "pipeline_id"),
    ("crm_owner_ref", "crm_owner_id"),
]
REFS["stage"] += [("pipeline_ref", "pipeline_id")]
REFS["engagement"] += [("crm_owner_ref", "crm_owner_id")]

# (the model listing, its list column, the pairs' table, its source column, its target column,
# the mark of the pairs this side lists or None)
LINKS = [
    ("opportunity", "contact_ids", "opportunitycontact", "opportunity_ref", "contact_ref", None),
    ("opportunity", "company_ids", "opportunitycompany", "opportunity_ref", "company_ref", None),
    (
        "opportunity",
        "engagement_ids",
        "engagementopportunity",
        "opportunity_ref",
        "engagement_ref",
        "listed_by_opportunity",
    ),
    ("engagement", "user_ids", "engagementuser", "engagement_ref", "user_ref", None),
    ("engagement", "company_ids", "engagementcompany", "engagement_ref", "company_ref", None),
    ("engagement", "contact_ids", "engagementcontact", "engagement_ref", "contact_ref", None),
    (
        "engagement",
        "opportunity_ids",
        "engagementopportunity",
        "engagement_ref",
        "opportunity_ref",
        "listed_by_engagement",
    ),
]

# (model, relation, its Morph id, target, reverse name, verbose name)
SINGLE = [
    ("opportunity", "stage", "stage_id", "stage", "opportunities", "stage"),
    ("opportunity", "pipeline", "pipeline_id", "pipeline", "opportunities", "pipeline"),
    ("opportunity", "crm_owner", "crm_owner_id", "crmuser", "opportunities", "owner"),
    ("stage", "pipeline", "pipeline_id", "pipeline", "stages", "pipeline"),
    ("engagement", "crm_owner", "crm_owner_id", "crmuser", "owned_engagements", "owner"),
]
# (model, relation, target, the pairs' model, reverse name)
MANY = [
    ("opportunity", "contacts", "contact", "OpportunityContact", "opportunities"),
    ("opportunity", "companies", "company", "OpportunityCompany", "opportunities"),
    ("engagement", "users", "crmuser", "EngagementUser", "engagements"),
    ("engagement", "companies", "company", "EngagementCompany", "engagements"),
    ("engagement", "contacts", "contact", "EngagementContact", "engagements"),
    ("engagement", "opportunities", "opportunity", "EngagementOpportunity", "engagements"),
]


def _batches(schema_editor, table):
    """The id ranges of ``table``, BATCH ids each, from its lowest id to its highest now."""
    quote = schema_editor.connection.ops.quote_name
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"SELECT MIN({quote('id')}), MAX({quote('id')}) FROM {table}")
        low, high = cursor.fetchone()
    if low is None:
        return
    for start in range(low, high + 1, BATCH):
        yield start, start + BATCH


def fill_refs(apps, schema_editor):
    connection = schema_editor.connection
    quote = connection.ops.quote_name
    for model_name, columns in REFS.items():
        model = apps.get_model("morph_webhooks", model_name)
        table = quote(model._meta.db_table)
        connector, owner = quote("connector_id"), quote("owner_id")
        assignments = ", ".join(
            f"{quote(ref)} = CASE WHEN {quote(source)} = '' THEN NULL ELSE "
            f"{SQL_REF.format(connector=connector, owner=owner, remote=quote(source))} END"
            for ref, source in columns
        )
        for start, end in _batches(schema_editor, table):
            with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {table} SET {assignments} WHERE {quote('id')} >= %s AND {quote('id')} < %s",
                    [start, end],
                )


def fill_pairs(apps, schema_editor):
    connection = schema_editor.connection
    quote = connection.ops.quote_name
    for model_name, column, link_name, source, target, mark in LINKS:
        model = apps.get_model("morph_webhooks", model_name)
        link = apps.get_model("morph_webhooks", link_name)
        table, links = quote(model._meta.db_table), quote(link._meta.db_table)
        listed = f"s.{quote(column)}"
        if connection.vendor == "postgresql":
            items = (
                f"CROSS JOIN LATERAL jsonb_array_elements_text(CASE WHEN jsonb_typeof({listed}) = 'array' "
                f"THEN {listed} ELSE '[]'::jsonb END) AS item(value)"
            )
        else:
            items = (
                f", json_each(CASE WHEN json_type({listed}) = 'array' THEN {listed} ELSE '[]' END) AS item"
            )
        target_ref = SQL_REF.format(connector="s.connector_id", owner="s.owner_id", remote="item.value")
        into = [quote(source), quote(target)]
        values = ["s.ref", target_ref]
        on_conflict = "DO NOTHING"
        if mark:
            into.append(quote(mark))
            values.append("TRUE")
            other = "listed_by_engagement" if mark == "listed_by_opportunity" else "listed_by_opportunity"
            into.append(quote(other))
            values.append("FALSE")
            on_conflict = f"DO UPDATE SET {quote(mark)} = TRUE"
        pair = sorted([quote(source), quote(target)])
        for start, end in _batches(schema_editor, table):
            with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {links} ({', '.join(into)}) "
                    f"SELECT DISTINCT {', '.join(values)} FROM {table} s {items} "
                    f"WHERE s.id >= %s AND s.id < %s AND item.value <> '' "
                    f"ON CONFLICT ({', '.join(pair)}) {on_conflict}",
                    [start, end],
                )


def _end(model, column, source=False):
    return models.ForeignKey(
        db_column=column,
        db_constraint=False,
        on_delete=django.db.models.deletion.CASCADE if source else django.db.models.deletion.DO_NOTHING,
        related_name="+",
        to=f"morph_webhooks.{model}",
        to_field="ref",
    )


def _pairs(name, verbose_name, source, target, constraint, index, *extra):
    (source_name, source_model, source_column, cascades) = source
    (target_name, target_model, target_column) = target
    return migrations.CreateModel(
        name=name,
        fields=[
            (
                "id",
                models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID"),
            ),
            *extra,
            (source_name, _end(source_model, source_column, source=cascades)),
            (target_name, _end(target_model, target_column)),
        ],
        options={
            "verbose_name": verbose_name,
            "constraints": [models.UniqueConstraint(fields=(source_name, target_name), name=constraint)],
            "indexes": [models.Index(fields=[target_name], name=index)],
        },
    )


def _ref():
    return morph_webhooks.resources.relations.Ref(
        help_text="Its connector, owner and Morph id, which relations to it join on.",
        verbose_name="reference",
    )


class Migration(migrations.Migration):
    # CREATE INDEX CONCURRENTLY runs outside a transaction; each batch commits on its own.
    atomic = False

    dependencies = [
        ("morph_webhooks", "0012_mirrored_engagements_and_workspaces"),
    ]

    operations = [
        *(migrations.AddField(model_name=model, name="ref", field=_ref()) for model in MIRRORED),
        *(
            migrations.AddField(
                model_name=model, name=ref, field=morph_webhooks.resources.relations.Ref(source=source)
            )
            for model, columns in REFS.items()
            for ref, source in columns
            if ref != "ref"
        ),
        migrations.RunPython(fill_refs, migrations.RunPython.noop, elidable=True),
        *(
            AddUniqueConstraintConcurrently(
                model_name=model,
                constraint=models.UniqueConstraint(
                    fields=("ref",), name=f"morph_webhooks_{model}_unique_ref"
                ),
            )
            for model in MIRRORED
        ),
        AddIndexConcurrently(
            model_name="opportunity",
            index=models.Index(fields=["stage_ref"], name="morph_opp_stage_ref_idx"),
        ),
        AddIndexConcurrently(
            model_name="opportunity",
            index=models.Index(fields=["pipeline_ref"], name="morph_opp_pipeline_ref_idx"),
        ),
        AddIndexConcurrently(
            model_name="opportunity",
            index=models.Index(fields=["crm_owner_ref"], name="morph_opp_crm_owner_ref_idx"),
        ),
        AddIndexConcurrently(
            model_name="stage",
            index=models.Index(fields=["pipeline_ref"], name="morph_stage_pipeline_ref_idx"),
        ),
        AddIndexConcurrently(
            model_name="engagement",
            index=models.Index(fields=["crm_owner_ref"], name="morph_eng_crm_owner_ref_idx"),
        ),
        _pairs(
            "OpportunityContact",
            "contact of an opportunity",
            ("opportunity", "opportunity", "opportunity_ref", True),
            ("contact", "contact", "contact_ref"),
            "morph_opp_contact_unique",
            "morph_opp_contact_idx",
        ),
        _pairs(
            "OpportunityCompany",
            "company of an opportunity",
            ("opportunity", "opportunity", "opportunity_ref", True),
            ("company", "company", "company_ref"),
            "morph_opp_company_unique",
            "morph_opp_company_idx",
        ),
        _pairs(
            "EngagementUser",
            "user of an engagement",
            ("engagement", "engagement", "engagement_ref", True),
            ("user", "crmuser", "user_ref"),
            "morph_eng_user_unique",
            "morph_eng_user_idx",
        ),
        _pairs(
            "EngagementCompany",
            "company of an engagement",
            ("engagement", "engagement", "engagement_ref", True),
            ("company", "company", "company_ref"),
            "morph_eng_company_unique",
            "morph_eng_company_idx",
        ),
        _pairs(
            "EngagementContact",
            "contact of an engagement",
            ("engagement", "engagement", "engagement_ref", True),
            ("contact", "contact", "contact_ref"),
            "morph_eng_contact_unique",
            "morph_eng_contact_idx",
        ),
        _pairs(
            "EngagementOpportunity",
            "opportunity of an engagement",
            ("engagement", "engagement", "engagement_ref", False),
            ("opportunity", "opportunity", "opportunity_ref"),
            "morph_eng_opp_unique",
            "morph_eng_opp_idx",
            ("listed_by_engagement", models.BooleanField(default=False)),
            ("listed_by_opportunity", models.BooleanField(default=False)),
        ),
        migrations.RunPython(fill_pairs, migrations.RunPython.noop, elidable=True),
        # The relations themselves: no column of their own.
        *(
            migrations.AddField(
                model_name=model,
                name=name,
                field=morph_webhooks.resources.relations.MirrorReference(
                    morph_id=morph_id,
                    ref=f"{name}_ref",
                    related_name=related_name,
                    to=f"morph_webhooks.{to}",
                    verbose_name=verbose_name,
                ),
            )
            for model, name, morph_id, to, related_name, verbose_name in SINGLE
        ),
        *(
            migrations.AddField(
                model_name=model,
                name=name,
                field=models.ManyToManyField(
                    blank=True,
                    related_name=related_name,
                    through=f"morph_webhooks.{through}",
                    to=f"morph_webhooks.{to}",
                ),
            )
            for model, name, to, through, related_name in MANY
        ),
    ]
