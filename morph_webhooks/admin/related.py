"""What a change page shows of the rows related to its resource: a deal's stage and contacts, a
contact's deals, a deal's engagements as a timeline. Read through the relations, which stay within
the row's connection, each list in a bounded number of queries whatever its length: a long list
shows its newest rows and links to the list of all of them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.db.models import Count, F, Model, Prefetch, QuerySet
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..models import Contact, Engagement, MirroredResource, Opportunity, Stage
from .display import EMPTY, amount_text, deleted_mark, moment

# The most related rows a change page lists; a deal may have thousands of engagements.
SHOWN = 50
# Columns no page shows of a related row, and the largest: left unread where no relation is
# read in the same query (Django refuses to defer columns beside a select_related() over these
# relations, which have no column of their own).
NOT_SHOWN = ("raw_resource", "extra_fields", "warnings")
# The most contacts a timeline's row names.
CONTACTS_SHOWN = 3

UrlOf = Callable[[Model], "str | None"]


def label_of(resource: MirroredResource) -> str:
    """How a referenced resource is named: a stage with its type, since that says won or lost."""
    if isinstance(resource, Stage) and resource.type:
        return f"{resource} ({resource.get_type_display()})"
    return str(resource)


def linked(url: str | None, text: str) -> SafeString | str:
    return format_html('<a href="{}">{}</a>', url, text) if url else text


def named(row: MirroredResource | None, morph_id: str, url_of: UrlOf | None) -> SafeString | str:
    """A referenced row by its name, linked when ``url_of`` is given; by its Morph id while it
    has not arrived."""
    if not morph_id:
        return EMPTY
    if row is None:
        # On a change page, said: an id alone reads as a broken name.
        return (
            format_html('{} <span class="quiet">({})</span>', morph_id, _("not received yet"))
            if url_of
            else morph_id
        )
    return linked(url_of(row) if url_of else None, label_of(row))


def referenced_ids(row: MirroredResource, column: str) -> list[str]:
    """The Morph ids a reference column holds, one or a list."""
    value = getattr(row, column)
    values = value if isinstance(value, list) else [value]
    return [remote_id for remote_id in values if isinstance(remote_id, str) and remote_id]


def in_listed_order(ids: Sequence[str], rows: Iterable[MirroredResource], url_of: UrlOf) -> SafeString | str:
    """The rows a Morph list names, in its order, linked; an id whose row has not arrived as it
    is; past :data:`SHOWN`, how many more (the list came whole in an event: it is never long)."""
    if not ids:
        return EMPTY
    found = {row.remote_id: row for row in rows}
    shown = format_html_join(
        ", ", "{}", ((named(found.get(remote_id), remote_id, url_of),) for remote_id in ids[:SHOWN])
    )
    if len(ids) <= SHOWN:
        return shown
    more = _("and %(count)d more") % {"count": len(ids) - SHOWN}
    return format_html("{} {}", shown, more)


def newest_deals(related: QuerySet[Opportunity]) -> list[Opportunity]:
    """One more than shown, to tell whether there are more: counting them all would cost more
    than the page."""
    rows = related.select_related("stage", "crm_owner")
    return list(rows.order_by("-remote_updated_at", "-pk")[: SHOWN + 1])


def newest_engagements(related: QuerySet[Engagement]) -> list[Engagement]:
    """Newest first: by when they happened, those not yet dated last; one more than shown."""
    rows = related.select_related("crm_owner").prefetch_related(
        Prefetch("contacts", queryset=Contact.objects.defer(*NOT_SHOWN))
    )
    ordered = rows.order_by(F("started_at").desc(nulls_last=True), "-remote_updated_at", "-pk")
    return list(ordered[: SHOWN + 1])


def unbroken(text: str) -> SafeString:
    """A time or an amount, kept on one line in a narrow column."""
    return format_html('<span class="morph-unbroken">{}</span>', text)


def table(
    headers: Sequence[Any], cells: Iterable[Sequence[Any]], *, empty: str, more: SafeString | str = ""
) -> SafeString:
    rows = list(cells)
    if not rows:
        return format_html('<p class="morph-related-empty">{}</p>', empty)
    return format_html(
        '<table class="morph-related"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>{}',
        format_html_join("", "<th>{}</th>", ((header,) for header in headers)),
        format_html_join(
            "", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((c,) for c in row)),) for row in rows)
        ),
        more,
    )


def all_of_them(rows: Sequence[Any], url: str | None, text: str) -> SafeString | str:
    """Under a list cut at :data:`SHOWN`: a link to all of them."""
    if len(rows) <= SHOWN:
        return ""
    what = _("The newest %(shown)d are shown.") % {"shown": SHOWN}
    return format_html('<p class="morph-related-more">{} {}</p>', what, linked(url, text))


def deals_table(rows: Sequence[Opportunity], url_of: UrlOf, all_url: str | None) -> SafeString:
    return table(
        [_("opportunity"), _("amount"), _("stage"), _("owner"), _("updated")],
        (
            (
                format_html("{} {}", linked(url_of(deal), str(deal)), deleted_mark(deal.deleted_at))
                if deal.deleted_at
                else linked(url_of(deal), str(deal)),
                EMPTY if deal.amount is None else unbroken(amount_text(deal.amount, deal.currency)),
                named(deal.stage, deal.stage_id, None),
                named(deal.crm_owner, deal.crm_owner_id, None),
                unbroken(moment(deal.remote_updated_at)),
            )
            for deal in rows[:SHOWN]
        ),
        empty=str(_("No opportunities.")),
        more=all_of_them(rows, all_url, str(_("All opportunities"))),
    )


def engagement_activity(engagement: Engagement) -> SafeString | str:
    """Its type, with its direction and status under it."""
    details = " · ".join(
        str(label) for label in (engagement.get_direction_display(), engagement.get_status_display()) if label
    )
    kind = engagement.get_type_display() or EMPTY
    return format_html('{}<br><span class="quiet">{}</span>', kind, details) if details else kind


def contacts_of(engagement: Engagement) -> str:
    # The prefetched rows, in the order Morph lists them; ids not arrived yet are left out.
    found = {contact.remote_id: contact for contact in engagement.contacts.all()}
    names = [str(found[remote_id]) for remote_id in engagement.contact_ids or [] if remote_id in found]
    if not names:
        return EMPTY
    if len(names) > CONTACTS_SHOWN:
        more = len(names) - CONTACTS_SHOWN
        return ", ".join(names[:CONTACTS_SHOWN]) + " " + str(_("and %(count)d more") % {"count": more})
    return ", ".join(names)


def timeline_table(rows: Sequence[Engagement], url_of: UrlOf, all_url: str | None) -> SafeString:
    return table(
        [_("type"), _("title"), _("when"), _("owner"), _("contacts")],
        (
            (
                engagement_activity(engagement),
                format_html(
                    "{} {}", linked(url_of(engagement), str(engagement)), deleted_mark(engagement.deleted_at)
                )
                if engagement.deleted_at
                else linked(url_of(engagement), str(engagement)),
                unbroken(moment(engagement.started_at)) if engagement.started_at else EMPTY,
                named(engagement.crm_owner, engagement.crm_owner_id, None),
                contacts_of(engagement),
            )
            for engagement in rows[:SHOWN]
        ),
        empty=str(_("No engagements.")),
        more=all_of_them(rows, all_url, str(_("All engagements"))),
    )


def stages_with_deals(related: QuerySet[Stage], listed: Sequence[str]) -> list[Stage]:
    """A pipeline's stages, each with its number of deals, in the order the pipeline lists them
    (those it does not list after them, by name); one more than shown."""
    rows = list(related.annotate(deals=Count("opportunities")).order_by("name", "pk")[: SHOWN + 1])
    position = {remote_id: index for index, remote_id in enumerate(listed)}
    return sorted(rows, key=lambda stage: position.get(stage.remote_id, len(position)))


def stages_table(
    rows: Sequence[Stage], listed: Sequence[str], url_of: UrlOf, all_url: str | None
) -> SafeString:
    """The stages and their deals; a stage the pipeline lists that has not arrived, by its id."""
    found = {stage.remote_id for stage in rows}
    # Only when every stage was read: past SHOWN, a stage not read is not missing.
    missing = [(remote_id, EMPTY, EMPTY) for remote_id in listed if remote_id not in found]
    missing = missing if len(rows) <= SHOWN else []
    return table(
        [_("stage"), _("type"), _("opportunities")],
        [
            *(
                (
                    linked(url_of(stage), str(stage)),
                    stage.get_type_display() or EMPTY,
                    getattr(stage, "deals", 0),
                )
                for stage in rows[:SHOWN]
            ),
            *missing[: max(0, SHOWN - len(rows))],
        ],
        empty=str(_("No stages.")),
        more=all_of_them(rows, all_url, str(_("All stages"))),
    )
