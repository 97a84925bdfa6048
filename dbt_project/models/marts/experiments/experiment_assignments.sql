-- One row per experiment and person: the arm and the first assignment date (the as-of of the first run that
-- assigned them; a backfill run may record an earlier one). An arm never changes once recorded
-- (activation/experiments.py), so the earliest record is the assignment. Nothing assigned after var('as_of')
-- is read.

with

assignments as (

    select * from {{ ref('stg_audit__experiment_assignments') }}
    where first_assigned_date <= cast('{{ as_of() }}' as date)

),

first_assignments as (

    select
        experiment,
        person_id,
        arm,
        holdout_share,
        first_assigned_date,
        was_sent_before_assignment,
        sync_name
    from assignments
    qualify row_number() over (
        partition by experiment, person_id
        order by first_assigned_date, attempt_id
    ) = 1

)

select * from first_assignments
