{#-
  as_of(): the run's as-of date, 'YYYY-MM-DD': nothing dated after the end of this day is read.

  `--vars '{as_of: ...}'` wins (plain dbt, the unit tests' overrides); else the environment's TOUCHPOINT_AS_OF,
  which the pipeline sets (touchpoint/config.py RunContext.env); else 2099-12-31 (everything). It is read when a
  node runs, never while dbt parses the project: dbt parses again from scratch when a var changes, or an
  environment variable that parsing read, and the date changes every day. That full parse was 4.7 s of each
  daily run at any scale; now a day's first layer reuses the day before's parse (tests/test_backfill.py). While
  parsing (`execute` false) no SQL runs, so the placeholder is never read. The Python models read the same
  date through touchpoint.config.run_as_of.
-#}
{% macro as_of() -%}
    {%- set unbounded = '2099-12-31' -%}  {#- touchpoint.config.UNBOUNDED_AS_OF -#}
    {%- if execute -%}
        {{- var('as_of', none) or env_var('TOUCHPOINT_AS_OF', unbounded) -}}
    {%- else -%}
        {{- unbounded -}}
    {%- endif -%}
{%- endmacro %}

{#- First instant after the as-of day: facts at or after it are not read (docs/contracts.md §6). -#}
{% macro as_of_end() -%}
    (cast('{{ as_of() }}' as date) + interval 1 day)
{%- endmacro %}
