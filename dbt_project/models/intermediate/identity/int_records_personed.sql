-- Every identity-bearing record with its person and the rule that attached it: the next identity.person_map when
-- it is built in full (a first or a scheduled full build; a daily build rewrites int_records_remapped's rows).
-- A view: its two readers each join the records (tens of millions) to the nodes, which costs less than writing
-- the result as a table and reading it back twice (docs/identity_engine.md, "Speed").
{{ config(materialized='view') }}

with

records as (

    select * from {{ ref('int_identity_records_unioned') }}

),

nodes as (

    select * from {{ ref('int_identity_nodes_personed') }}

),

personed as (

    {{ personed_records('records', 'nodes') }}

)

select * from personed
