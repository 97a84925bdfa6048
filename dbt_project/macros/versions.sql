{#
  as_of_latest_version(key, updated_at, happened_at): the `where` and `qualify` of a staging model's
  `latest` step, the one rule for which version of a source row a run sees. Versions updated after the
  as-of day are hidden (`updated_at`), rows that happened after it are "not yet" (`happened_at`), and of
  what remains each key keeps its latest version: latest update, then latest extraction, batch and row, so
  a row extracted twice (overlapping extracts) is kept once.
#}
{% macro as_of_latest_version(key, updated_at=none, happened_at=none) -%}
    {%- set conditions = [] -%}
    {%- if updated_at -%}
        {%- do conditions.append("(" ~ updated_at ~ " is null or " ~ updated_at ~ " < " ~ as_of_end() ~ ")") -%}
    {%- endif -%}
    {%- if happened_at -%}
        {%- do conditions.append(happened_at ~ " < " ~ as_of_end()) -%}
    {%- endif -%}
    {%- if conditions %}
    where {{ conditions | join(" and ") }}
    {%- endif %}
    qualify row_number() over (
        partition by {{ key }}
        order by
            {%- if updated_at %} {{ updated_at }} desc nulls last,{% endif %}
            _extracted_at desc, _batch_id desc, _row_number desc
    ) = 1
{%- endmacro %}
