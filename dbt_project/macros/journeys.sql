{#
  The web session an event belongs to: its session_id, or a session of its own ('event:<event_id>') when it has
  none. fct_web_sessions groups events by it and fct_funnel_steps and fct_abandoned_carts find a session's
  events with it: the one definition of a session.
#}
{#- A raw event's session id as staged (stg_web__events): trimmed, an empty one none. -#}
{% macro staged_session_id(raw_session_id) -%}
    nullif(trim({{ raw_session_id }}), '')
{%- endmacro %}

{% macro web_session_key(session_id='session_id', event_id='event_id') -%}
    coalesce({{ session_id }}, 'event:' || {{ event_id }})
{%- endmacro %}

{#- fct_email_engagement's row of an email event: its person and campaign, an event without a campaign counted
    under '(none)'. The one definition: the mart groups by it, and its incremental build finds the rows to
    re-derive with it (macros/incremental.sql). -#}
{% macro email_campaign_key(campaign_id) -%}
    coalesce({{ campaign_id }}, '(none)')
{%- endmacro %}

{% macro email_engagement_id(person_id, campaign_id) -%}
    {{ person_id }} || '|' || {{ email_campaign_key(campaign_id) }}
{%- endmacro %}

{#- The campaign a landing URL carries: its utm_campaign query parameter, URL-decoded; null without one. -#}
{% macro utm_campaign(url) -%}
    nullif(trim(url_decode(regexp_extract({{ url }}, '[?&]utm_campaign=([^&#]*)', 1))), '')
{%- endmacro %}

{#- A URL without its query string and fragment: the page, without the tags or identifiers a query can carry. -#}
{% macro url_page(url) -%}
    nullif(regexp_replace({{ url }}, '[?#].*$', ''), '')
{%- endmacro %}

{#- The purchases a touch or session looks up (asof join on person and time): one per person and instant. Two
    purchases of a person in the same second (a web order and a store sale) would make the lookup pick either,
    so reruns could disagree; the smaller order id is the one found. -#}
{% macro lookup_purchases(columns) -%}
    select {{ columns | join(', ') }}
    from {{ ref('fct_orders') }}
    where is_purchase and person_id is not null
    qualify row_number() over (partition by person_id, ordered_at order by order_id) = 1
{%- endmacro %}
