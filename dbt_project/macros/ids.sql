{#-
  One text id from several parts, joined by '|': the one way an id is composed from values that come from the
  sources. A part holding '\' or '|' has it escaped ('\\', '\|') and a missing part reads `missing` ('\N' unless
  the caller says that a missing part and an empty one are the same thing), so two different lists of parts never
  give the same id: a '|' in a session id, an order id or an email, or a null channel beside a device, cannot
  make two rows one (and fail the id's unique test, which would stop the run). Parts with none of these read as
  they are: ['purchase', 's-1', 3] gives 'purchase|s-1|3'.
-#}
{% macro composite_id(parts, missing="'\\N'") -%}
    concat_ws('|', {% for part in parts -%}
        {{ id_part(part, missing) }}{% if not loop.last %}, {% endif %}
    {%- endfor %})
{%- endmacro %}

{% macro id_part(part, missing="'\\N'") -%}
    coalesce(replace(replace(cast({{ part }} as varchar), '\', '\\'), '|', '\|'), {{ missing }})
{%- endmacro %}
