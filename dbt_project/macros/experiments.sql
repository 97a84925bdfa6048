{#
  The rows of a source table the pipeline's load stage writes (not ingest), or `empty_select` when it does not
  exist yet: audit.experiment_assignments is created by every load stage (activation/audit.py), but a warehouse
  built without one (dbt run by hand on an older warehouse, the tests' fixtures) has none, and a first run must
  still build an (empty) marts.experiment_assignments. Calling source() keeps the lineage in the manifest.
#}
{% macro source_or_empty(relation, empty_select) -%}
    {%- set found = load_relation(relation) if execute else relation -%}
    {%- if found is none -%}
        {{ empty_select }}
    {%- else -%}
        select * from {{ relation }}
    {%- endif -%}
{%- endmacro %}

{#- audit.experiment_assignments with no rows, typed as activation/audit.py writes it. -#}
{% macro empty_experiment_assignments() -%}
    select
        cast(null as varchar) as experiment,
        cast(null as varchar) as person_id,
        cast(null as varchar) as arm,
        cast(null as double) as holdout_share,
        cast(null as date) as first_assigned_date,
        cast(null as boolean) as was_sent_before_assignment,
        cast(null as varchar) as sync_name,
        cast(null as varchar) as run_id,
        cast(null as varchar) as attempt_id,
        cast(null as timestamp) as assigned_at
    where false
{%- endmacro %}
