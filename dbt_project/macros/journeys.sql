{#
  The web session an event belongs to: its session_id, or a session of its own ('event:<event_id>') when it has
  none. fct_web_sessions groups events by it and fct_funnel_steps and fct_abandoned_carts find a session's
  events with it: the one definition of a session.
#}
{% macro web_session_key(session_id='session_id', event_id='event_id') -%}
    coalesce({{ session_id }}, 'event:' || {{ event_id }})
{%- endmacro %}

{#- The campaign a landing URL carries: its utm_campaign query parameter, URL-decoded; null without one. -#}
{% macro utm_campaign(url) -%}
    nullif(trim(url_decode(regexp_extract({{ url }}, '[?&]utm_campaign=([^&#]*)', 1))), '')
{%- endmacro %}

{#- A URL without its query string and fragment: the page, without the tags or identifiers a query can carry. -#}
{% macro url_page(url) -%}
    nullif(regexp_replace({{ url }}, '[?#].*$', ''), '')
{%- endmacro %}
