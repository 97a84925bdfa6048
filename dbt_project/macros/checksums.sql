{#-
  Checksums: two sets of rows compared without joining them row by row. Per group: the row count and two sums
  of 64-bit hashes of each row, one of its values as they are and one with every text value shifted by a
  character. A row missing, added, repeated or changed changes the count or a sum. Why two sums: DuckDB's
  hash() of a string mixes the last byte of each 8-byte chunk weakly, so texts that differ there in two chunks
  collide ('W20240492-000000' and 'W20240402-000005'; 394,416 of 3M such ids), and the shift moves those bytes
  to where they are mixed well (no id of five shapes, 3M each, collided in both sums). The one definition, read
  by tests/assert_person_map_has_every_staged_record_once.sql (staged records against mapped ones) and the
  incremental fct_conversion_paths (each person's inputs against the previous build's, macros/incremental.sql).
-#}

{#- A row's two hashes: of the hash() argument list `values`, and of shifted_values of the row's columns. -#}
{% macro checksum_row_hashes(values, shifted) -%}
    hash({{ values }}) as row_hash,
    hash({{ shifted }}) as shifted_hash
{%- endmacro %}

{#- The hash() argument list of the text values of a row, each shifted by a character: `columns` are column
    names (each holding text) or dbt Columns (the text ones are taken). Numbers, dates and lists are left to the
    row hash, which mixes them well. -#}
{% macro shifted_values(columns) -%}
    '#'
    {%- for column in columns if column is string or column.is_string() -%}
        , '#' || {{ column if column is string else adapter.quote(column.name) }}
    {%- endfor -%}
{%- endmacro %}

{#- The checksum of each group of rows that carry checksum_row_hashes. -#}
{% macro checksum_aggregates() -%}
    count(*) as input_rows,
    sum(row_hash) as row_hash_sum,
    sum(shifted_hash) as shifted_hash_sum
{%- endmacro %}

{#- True where the checksums `left` and `right` differ (either may be null: a group only one side has). -#}
{% macro checksums_differ(left, right) -%}
    {{ left }}.input_rows is distinct from {{ right }}.input_rows
    or {{ left }}.row_hash_sum is distinct from {{ right }}.row_hash_sum
    or {{ left }}.shifted_hash_sum is distinct from {{ right }}.shifted_hash_sum
{%- endmacro %}
