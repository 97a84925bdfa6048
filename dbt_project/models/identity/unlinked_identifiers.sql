-- Identifiers (email, phone, web device, loyalty id) that link nobody: every link to them was blocked by a
-- guardrail. Each is shown with its kind, how many records carry it and why it was held back, so the people who
-- own identity can see family mailboxes, call-centre numbers and shared devices at a glance.

with

links as (

    select * from {{ ref('int_identity_links_guarded') }}

),

unlinked as (

    select
        identifier_node,
        split_part(identifier_node, ':', 1) as identifier_type,
        count(distinct owner_node) as owners,
        string_agg(distinct split_part(blocked_rule, ':', 1), ', ' order by split_part(blocked_rule, ':', 1))
            as blocked_by,
        min(blocked_rule) as blocked_rule
    from links
    group by identifier_node
    having not bool_or(is_linked)

)

select * from unlinked
